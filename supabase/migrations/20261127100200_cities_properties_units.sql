-- Where guests can stay: cities, properties and their rentable units.

create table reserve.cities (
  code       text primary key check (code ~ '^[A-Z]{3}$'),
  name       text not null check (length(btrim(name)) > 0),
  state      text not null check (state ~ '^[A-Z]{2}$'),
  timezone   text not null default 'America/Sao_Paulo',
  created_at timestamptz not null default now()
);
comment on table reserve.cities is 'Cities we operate in; city_code (RIO, SAO, FLN, SSA, ...) keys reporting and the ledger.';

create table reserve.properties_map (
  id          uuid primary key default gen_random_uuid(),
  city_code   text not null references reserve.cities (code),
  name        text not null check (length(btrim(name)) > 0),
  -- the property in the host's or channel manager's system, when it came from one
  source      text not null default 'direct' check (source ~ '^[a-z][a-z0-9_]*$'),
  external_id text,
  host_id     uuid,
  address     text,
  is_active   boolean not null default true,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  unique (source, external_id)
);
comment on table reserve.properties_map is
  'Properties (a building or a house) mapped from the host''s system; each belongs to one city.';
create index properties_map_city_idx on reserve.properties_map (city_code);

create table reserve.unit_map (
  id            uuid primary key default gen_random_uuid(),
  property_id   uuid not null references reserve.properties_map (id),
  external_id   text,
  name          text not null check (length(btrim(name)) > 0),
  unit_type     text not null check (unit_type in ('studio', 'loft', 'apartment', 'house', 'villa', 'room')),
  max_occupancy integer not null check (max_occupancy between 1 and 50),
  bedrooms      integer not null default 0 check (bedrooms between 0 and 50),
  base_price    bigint not null check (base_price > 0),
  currency      text not null default 'BRL' check (currency ~ '^[A-Z]{3}$'),
  min_nights    integer not null default 1 check (min_nights >= 1),
  max_nights    integer not null default 30 check (max_nights <= 365),
  is_active     boolean not null default true,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  constraint unit_map_nights_bounds_check check (max_nights >= min_nights),
  unique (property_id, name),
  unique (property_id, external_id)
);
comment on table reserve.unit_map is
  'Rentable units of a property (studio to villa): capacity, nightly base price in centavos, stay bounds.';
comment on column reserve.unit_map.base_price is 'Nightly price in minor units (centavos) when the calendar sets none.';

create trigger _100_touch_updated_at before update on reserve.properties_map
  for each row execute function reserve.touch_updated_at();
create trigger _100_touch_updated_at before update on reserve.unit_map
  for each row execute function reserve.touch_updated_at();

alter table reserve.cities enable row level security;
alter table reserve.properties_map enable row level security;
alter table reserve.unit_map enable row level security;
revoke all on reserve.cities, reserve.properties_map, reserve.unit_map from public, anon, authenticated;
grant select on reserve.cities, reserve.properties_map, reserve.unit_map to service_role;

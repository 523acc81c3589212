-- A guest's checkout before payment (booking_intents) and the nights it holds (booking_locks).

-- property_id and city_code are copies of the unit's, kept for reporting and for the runbook's
-- queries; deriving them here means no writer (the runbook's manual SQL included) can get them wrong.
create function reserve.fill_unit_location() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.unit_id is null then
    return new;  -- the NOT NULL constraint names the problem
  end if;
  select u.property_id, p.city_code
    into new.property_id, new.city_code
  from reserve.unit_map u
  join reserve.properties_map p on p.id = u.property_id
  where u.id = new.unit_id;
  if not found then
    raise exception using
      errcode = 'foreign_key_violation',
      message = format('unit %s does not exist', new.unit_id),
      table = tg_table_name,
      column = 'unit_id',
      constraint = tg_table_name || '_unit_id_fkey',
      hint = 'pick a unit from reserve.unit_map';
  end if;
  return new;
end
$$;
comment on function reserve.fill_unit_location() is
  'BEFORE trigger: sets property_id and city_code from unit_id.';
revoke all on function reserve.fill_unit_location() from public;

create table reserve.booking_intents (
  id           uuid primary key default gen_random_uuid(),
  unit_id      uuid not null references reserve.unit_map (id),
  property_id  uuid not null references reserve.properties_map (id),
  city_code    text not null references reserve.cities (code),
  check_in     date not null,
  check_out    date not null,
  nights       integer generated always as (check_out - check_in) stored,
  guests       integer not null check (guests between 1 and 50),
  amount       bigint not null check (amount > 0),
  currency     text not null default 'BRL' check (currency ~ '^[A-Z]{3}$'),
  status       text not null default 'pending'
               check (status in ('pending', 'converted', 'expired', 'cancelled')),
  expires_at   timestamptz not null,
  -- who asked (user id or app installation), for per-client limits
  client_id    text,
  guest_name   text,
  guest_email  text check (guest_email is null or guest_email ~ '^[^@\s]+@[^@\s]+$'),
  converted_at timestamptz,
  cancelled_at timestamptz,
  metadata     jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now(),
  -- lets booking_locks prove they hold nights of their intent's unit
  unique (id, unit_id),
  constraint booking_intents_dates_check check (check_out > check_in),
  constraint booking_intents_stay_length_check check (check_out - check_in <= 365),
  constraint booking_intents_converted_at_check check ((status = 'converted') = (converted_at is not null))
);
comment on table reserve.booking_intents is
  'A checkout in progress: unit, dates, guests and the priced amount (centavos), holding its nights '
  'until expires_at. Ends converted (a reservation exists), expired or cancelled.';
comment on column reserve.booking_intents.amount is 'Total price of the stay in centavos.';
create index booking_intents_unit_dates_idx on reserve.booking_intents (unit_id, check_in);
create index booking_intents_pending_expiry_idx on reserve.booking_intents (expires_at) where status = 'pending';
create index booking_intents_client_idx on reserve.booking_intents (client_id, created_at) where client_id is not null;

create trigger _100_touch_updated_at before update on reserve.booking_intents
  for each row execute function reserve.touch_updated_at();
create trigger _200_fill_unit_location before insert or update of unit_id on reserve.booking_intents
  for each row execute function reserve.fill_unit_location();
create trigger _900_audit after insert or update or delete on reserve.booking_intents
  for each row execute function reserve.audit_row_change();

create table reserve.booking_locks (
  id                uuid primary key default gen_random_uuid(),
  booking_intent_id uuid not null,
  unit_id           uuid not null,
  lock_date         date not null,
  status            text not null default 'held' check (status in ('held', 'converted', 'released', 'expired')),
  expires_at        timestamptz not null,
  released_at       timestamptz,
  created_at        timestamptz not null default now(),
  -- a lock is on a calendar night that exists
  constraint booking_locks_night_fkey
    foreign key (unit_id, lock_date) references reserve.availability_calendar (unit_id, date),
  constraint booking_locks_intent_unit_fkey
    foreign key (booking_intent_id, unit_id) references reserve.booking_intents (id, unit_id),
  constraint booking_locks_released_at_check check ((status in ('released', 'expired')) = (released_at is not null))
);
comment on table reserve.booking_locks is
  'One row per night an intent holds (status held, counted in availability_calendar.temp_holds until '
  'expires_at), later converted into a booking, released or expired.';
-- an intent holds a night once; released and expired locks stay as history
create unique index booking_locks_one_live_per_night on reserve.booking_locks (booking_intent_id, lock_date)
  where status in ('held', 'converted');
create index booking_locks_intent_idx on reserve.booking_locks (booking_intent_id, unit_id);
create index booking_locks_unit_date_idx on reserve.booking_locks (unit_id, lock_date);
create index booking_locks_held_expiry_idx on reserve.booking_locks (expires_at) where status = 'held';

alter table reserve.booking_intents enable row level security;
alter table reserve.booking_locks enable row level security;
revoke all on reserve.booking_intents, reserve.booking_locks from public, anon, authenticated;
grant select on reserve.booking_intents, reserve.booking_locks to service_role;

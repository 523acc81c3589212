-- One row per unit and night: how many can be sold (allotment), how many are sold (bookings_count)
-- and how many are held by unpaid checkouts (temp_holds).

create table reserve.availability_calendar (
  unit_id        uuid not null references reserve.unit_map (id),
  date           date not null,
  allotment      integer not null default 1 check (allotment >= 0),
  bookings_count integer not null default 0 check (bookings_count >= 0),
  temp_holds     integer not null default 0 check (temp_holds >= 0),
  is_available   boolean not null default true,
  is_blocked     boolean not null default false,
  block_reason   text,
  price          bigint check (price > 0),
  currency       text not null default 'BRL' check (currency ~ '^[A-Z]{3}$'),
  updated_at     timestamptz not null default now(),
  primary key (unit_id, date)
);
comment on table reserve.availability_calendar is
  'Per unit and night: allotment, bookings_count and temp_holds (the counters are the truth), '
  'is_available (a cached flag) and is_blocked (closed by the host or ops). A night without a row '
  'cannot be sold.';
comment on column reserve.availability_calendar.price is
  'Nightly price in centavos for this night; null means the unit''s base_price.';
create index availability_calendar_date_idx on reserve.availability_calendar (date);

create trigger _100_touch_updated_at before update on reserve.availability_calendar
  for each row execute function reserve.touch_updated_at();
create trigger _900_audit after insert or update or delete on reserve.availability_calendar
  for each row execute function reserve.audit_row_change('unit_id', 'date');

alter table reserve.availability_calendar enable row level security;
revoke all on reserve.availability_calendar from public, anon, authenticated;
grant select on reserve.availability_calendar to service_role;

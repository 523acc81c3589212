-- Reservations: what a paid booking intent becomes.

create table reserve.reservations (
  id                  uuid primary key default gen_random_uuid(),
  booking_intent_id   uuid not null references reserve.booking_intents (id),
  payment_id          uuid,
  confirmation_code   text not null unique check (confirmation_code ~ '^RES-[0-9]{4}-[A-Z0-9]{6}$'),
  city_code           text not null references reserve.cities (code),
  property_id         uuid not null references reserve.properties_map (id),
  unit_id             uuid not null references reserve.unit_map (id),
  check_in            date not null,
  check_out           date not null,
  nights              integer generated always as (check_out - check_in) stored,
  stay                daterange generated always as (daterange(check_in, check_out, '[)')) stored,
  guests              integer not null check (guests between 1 and 50),
  total_amount        bigint not null check (total_amount > 0),
  currency            text not null default 'BRL' check (currency ~ '^[A-Z]{3}$'),
  status              text not null default 'host_commit_pending' check (status in (
                        'host_commit_pending', 'confirmed', 'checked_in', 'checked_out', 'cancelled', 'no_show')),
  payment_status      text not null default 'paid' check (payment_status in (
                        'pending', 'paid', 'refund_pending', 'partially_refunded', 'refunded')),
  cancellation_reason text,
  cancelled_at        timestamptz,
  confirmed_at        timestamptz,
  checked_in_at       timestamptz,
  metadata            jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  created_at          timestamptz not null default now(),
  updated_at          timestamptz not null default now(),
  constraint reservations_payment_fkey
    foreign key (payment_id, booking_intent_id) references reserve.payments (id, booking_intent_id),
  constraint reservations_dates_check check (check_out > check_in),
  constraint reservations_cancellation_reason_check
    check (status <> 'cancelled' or coalesce(length(btrim(cancellation_reason)), 0) > 0)
);
comment on table reserve.reservations is
  'A booked stay, created from a paid booking intent: awaits the host''s commit (host_commit_pending), '
  'then confirmed, checked_in, checked_out; or cancelled with a reason. confirmation_code is what the guest sees.';
comment on column reserve.reservations.stay is 'The nights as a daterange [check_in, check_out).';

-- one live reservation per booking intent
create unique index reservations_one_live_per_intent on reserve.reservations (booking_intent_id)
  where status <> 'cancelled';
create index reservations_unit_stay_idx on reserve.reservations using gist (unit_id, stay);
create index reservations_payment_idx on reserve.reservations (payment_id, booking_intent_id);

-- The stay is the intent's: what a writer leaves out (the runbook's manual INSERT lists only ids and
-- statuses) comes from the booking intent, and the paying payment is the intent's first success.
create function reserve.fill_reservation_from_intent() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
begin
  select * into bi from reserve.booking_intents where id = new.booking_intent_id;
  if not found then
    return new;  -- the foreign key names the problem
  end if;
  new.unit_id := coalesce(new.unit_id, bi.unit_id);
  new.check_in := coalesce(new.check_in, bi.check_in);
  new.check_out := coalesce(new.check_out, bi.check_out);
  new.guests := coalesce(new.guests, bi.guests);
  new.total_amount := coalesce(new.total_amount, bi.amount);
  if new.payment_id is null then
    select p.id into new.payment_id
    from reserve.payments p
    where p.booking_intent_id = bi.id and p.status = 'succeeded' and p.duplicate_of is null
    order by p.succeeded_at, p.id
    limit 1;
  end if;
  return new;
end
$$;
comment on function reserve.fill_reservation_from_intent() is
  'BEFORE INSERT trigger: fills a reservation''s missing unit, dates, guests, amount and payment from its booking intent.';
revoke all on function reserve.fill_reservation_from_intent() from public;

create trigger _150_fill_from_intent before insert on reserve.reservations
  for each row execute function reserve.fill_reservation_from_intent();
create trigger _100_touch_updated_at before update on reserve.reservations
  for each row execute function reserve.touch_updated_at();
create trigger _200_fill_unit_location before insert or update of unit_id on reserve.reservations
  for each row execute function reserve.fill_unit_location();
create trigger _900_audit after insert or update or delete on reserve.reservations
  for each row execute function reserve.audit_row_change();

alter table reserve.reservations enable row level security;
revoke all on reserve.reservations from public, anon, authenticated;
grant select on reserve.reservations to service_role;

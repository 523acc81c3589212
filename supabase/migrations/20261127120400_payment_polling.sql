-- Polling: every payment in flight is asked about at the provider on a schedule, so a lost webhook
-- delays a confirmation instead of losing it. The schedule lives in its own table (payment_polls), one
-- row per payment in flight, so claiming and rescheduling neither rewrites nor audits the payment.

create table reserve.poll_policies (
  provider         text not null check (provider in ('stripe', 'mercadopago', 'openpix')),
  method           text not null check (method in ('card', 'pix')),
  first_poll_after interval not null check (first_poll_after > interval '0'),
  base_interval    interval not null check (base_interval > interval '0'),
  max_interval     interval not null,
  -- how long after its expiry an unpaid attempt is still asked about before it is expired here
  expire_grace     interval not null check (expire_grace >= interval '0'),
  primary key (provider, method),
  check (max_interval >= base_interval)
);
comment on table reserve.poll_policies is
  'When the poller asks a provider about a payment in flight: first after first_poll_after, then every '
  'base_interval doubling up to max_interval; an unpaid attempt is expired expire_grace after its expiry '
  '(PIX: the charge''s expires_at; card: the hold''s).';

insert into reserve.poll_policies values
  -- the runbook: poll PIX every 5 minutes until confirmed
  ('mercadopago', 'pix', interval '1 minute', interval '5 minutes', interval '5 minutes', interval '5 minutes'),
  ('openpix', 'pix', interval '1 minute', interval '5 minutes', interval '5 minutes', interval '5 minutes'),
  ('stripe', 'pix', interval '1 minute', interval '5 minutes', interval '5 minutes', interval '5 minutes'),
  -- a card is confirmed by the guest within seconds or not at all: back off to hourly
  ('stripe', 'card', interval '2 minutes', interval '5 minutes', interval '1 hour', interval '15 minutes');

create trigger _900_audit after insert or update or delete on reserve.poll_policies
  for each row execute function reserve.audit_row_change('provider', 'method');
alter table reserve.poll_policies enable row level security;
revoke all on reserve.poll_policies from public, anon, authenticated;
grant select on reserve.poll_policies to service_role;

create table reserve.payment_polls (
  payment_id     uuid primary key references reserve.payments (id) on delete cascade,
  next_poll_at   timestamptz not null,
  attempts       integer not null default 0 check (attempts >= 0),
  last_polled_at timestamptz,
  last_result    text
);
comment on table reserve.payment_polls is
  'The poll schedule of each payment in flight (pending or processing); the row goes when the payment '
  'leaves flight. attempts counts polls; last_result is the provider''s answer or the error.';
create index payment_polls_due_idx on reserve.payment_polls (next_poll_at);
alter table reserve.payment_polls enable row level security;
revoke all on reserve.payment_polls from public, anon, authenticated;
grant select on reserve.payment_polls to service_role;

create function reserve.schedule_payment_poll() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status in ('pending', 'processing') then
    insert into reserve.payment_polls (payment_id, next_poll_at)
    select new.id, now() + pol.first_poll_after
    from reserve.poll_policies pol where pol.provider = new.provider and pol.method = new.method
    on conflict (payment_id) do nothing;
  elsif tg_op = 'UPDATE' then
    delete from reserve.payment_polls where payment_id = new.id;
  end if;
  return null;
end
$$;
comment on function reserve.schedule_payment_poll() is
  'AFTER trigger on payments: a payment entering flight gets a poll schedule, one leaving it loses it.';
revoke all on function reserve.schedule_payment_poll() from public;

create trigger _500_schedule_poll after insert on reserve.payments
  for each row execute function reserve.schedule_payment_poll();
create trigger _500_unschedule_poll after update of status on reserve.payments
  for each row when (old.status is distinct from new.status) execute function reserve.schedule_payment_poll();

-- payments already in flight when this migration lands are polled at once
insert into reserve.payment_polls (payment_id, next_poll_at)
select id, now() from reserve.payments where status in ('pending', 'processing');

create function reserve.claim_payments_to_poll(p_limit integer default 100, p_lease interval default interval '2 minutes',
                                              p_payment_ids uuid[] default null)
returns table (payment_id uuid, booking_intent_id uuid, provider text, method text, gateway_payment_id text,
               status text, amount bigint, currency text, expires_at timestamptz, created_at timestamptz,
               attempts integer)
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit < 1 or p_limit > 10000 or p_lease is null or p_lease <= interval '0' then
    raise exception using errcode = 'RC001', message = 'p_limit between 1 and 10000 and a positive p_lease are required';
  end if;
  -- the lease (next_poll_at pushed ahead) keeps a concurrent run off these payments while we ask the
  -- provider outside any transaction; if this run dies, they come due again when it ends
  return query
    with due as (
      select pp.payment_id from reserve.payment_polls pp
      -- named payments are polled now, whenever they were due (an operator asking)
      where (p_payment_ids is null and pp.next_poll_at <= now()) or pp.payment_id = any (p_payment_ids)
      order by pp.next_poll_at
      limit p_limit
      for update skip locked
    ), claimed as (
      update reserve.payment_polls pp
      set next_poll_at = now() + p_lease, attempts = pp.attempts + 1, last_polled_at = now()
      from due where pp.payment_id = due.payment_id
      returning pp.payment_id, pp.attempts
    )
    select p.id, p.booking_intent_id, p.provider, p.method, p.gateway_payment_id, p.status, p.amount,
           p.currency, p.expires_at, p.created_at, c.attempts
    from claimed c join reserve.payments p on p.id = c.payment_id
    order by p.created_at;
end
$$;
comment on function reserve.claim_payments_to_poll(integer, interval, uuid[]) is
  'Claims up to p_limit payments whose poll is due, or the payments named in p_payment_ids whatever their '
  'schedule (SKIP LOCKED, so concurrent pollers split the work), and leases them for p_lease. Report each '
  'with reserve.record_poll_result.';
revoke all on function reserve.claim_payments_to_poll(integer, interval, uuid[]) from public;
grant execute on function reserve.claim_payments_to_poll(integer, interval, uuid[]) to service_role;

create function reserve.record_poll_result(
  p_payment_id       uuid,
  p_status           text default null,
  p_event_at         timestamptz default null,
  p_gateway_status   text default null,
  p_error_code       text default null,
  p_error_message    text default null,
  p_refunded_amount  bigint default null,
  p_provider_object  jsonb default null,
  p_poll_error       text default null)
returns table (payment_id uuid, outcome text, status text, reservation_id uuid, confirmation_code text,
               finalize_outcome text, next_poll_at timestamptz)
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  pol reserve.poll_policies;
  a record;
  deadline timestamptz;
  tries integer;
begin
  p := reserve.lock_payment(p_payment_id);
  payment_id := p.id;
  outcome := 'unchanged';
  if p_poll_error is null and p_status is not null then
    select * into a from reserve.apply_payment_status(
      p.id, p_status, p_event_at, p_gateway_status, p_error_code, p_error_message, p_refunded_amount,
      p_provider_object, null, 'ignore');
    outcome := a.outcome;
    reservation_id := a.reservation_id;
    confirmation_code := a.confirmation_code;
    finalize_outcome := a.finalize_outcome;
    p := reserve.lock_payment(p.id);
  end if;

  if p.status = 'pending' and p_poll_error is null and coalesce(p_status, 'pending') = 'pending' then
    select * into pol from reserve.poll_policies x where x.provider = p.provider and x.method = p.method;
    select coalesce(case when p.method = 'pix' then p.expires_at end, bi.expires_at) + pol.expire_grace
      into deadline from reserve.booking_intents bi where bi.id = p.booking_intent_id;
    if p.gateway_payment_id is null and p.created_at < now() - interval '10 minutes' then
      -- the checkout died between recording the attempt and hearing from the provider: the guest never
      -- saw a client secret or a QR code, so nothing can be paid on it
      perform reserve.abort_checkout(p.id, 'checkout_incomplete', 'the provider''s answer was never recorded');
      outcome := 'expired';
    elsif deadline <= now() then
      -- this poll was the last check: the provider still says unpaid
      perform reserve.apply_payment_status(p.id, 'expired', null, p_gateway_status, null, null, null, p_provider_object, null, 'ignore');
      -- the hold ends now, the intent is not cancelled: a PIX paid late is still honoured if the
      -- nights are free (finalize re-holds them); release_expired_holds frees them in this run
      if not exists (select 1 from reserve.payments x
                     where x.booking_intent_id = p.booking_intent_id and x.status in ('pending', 'processing')) then
        update reserve.booking_intents bi set expires_at = least(bi.expires_at, now())
        where bi.id = p.booking_intent_id and bi.status = 'pending';
        update reserve.booking_locks l set expires_at = least(l.expires_at, now())
        where l.booking_intent_id = p.booking_intent_id and l.status = 'held';
      end if;
      outcome := 'expired';
    end if;
    p := reserve.lock_payment(p.id);
  end if;

  status := p.status;
  if p.status in ('pending', 'processing') then
    select * into pol from reserve.poll_policies x where x.provider = p.provider and x.method = p.method;
    select pp.attempts into tries from reserve.payment_polls pp where pp.payment_id = p.id;
    update reserve.payment_polls pp
    set next_poll_at = now() + least(pol.max_interval, pol.base_interval * power(2, least(greatest(coalesce(tries, 1) - 1, 0), 20))::integer),
        last_result = coalesce('error: ' || p_poll_error, p_gateway_status, p_status)
    where pp.payment_id = p.id
    returning pp.next_poll_at into next_poll_at;
  end if;
  return next;
end
$$;
comment on function reserve.record_poll_result(uuid, text, timestamptz, text, text, text, bigint, jsonb, text) is
  'What the poller learnt about a payment: applies the provider''s status (as a webhook would), expires '
  'an attempt still unpaid past its expiry plus the policy''s grace (and releases its holds), and '
  'schedules the next poll with backoff. p_poll_error records a failed provider call (polled again later). '
  'An expired attempt ends its intent''s hold (release_expired_holds frees the nights) without cancelling '
  'the intent, so a late payment is still honoured when the nights are free.';
revoke all on function reserve.record_poll_result(uuid, text, timestamptz, text, text, text, bigint, jsonb, text) from public;
grant execute on function reserve.record_poll_result(uuid, text, timestamptz, text, text, text, bigint, jsonb, text) to service_role;

create table reserve.job_heartbeats (
  id          bigint generated always as identity primary key,
  job         text not null check (job ~ '^[a-z][a-z0-9_]*$'),
  started_at  timestamptz not null,
  finished_at timestamptz not null default now(),
  ok          boolean not null,
  summary     jsonb not null default '{}'::jsonb check (jsonb_typeof(summary) = 'object')
);
comment on table reserve.job_heartbeats is
  'One row per run of a scheduled job (poll_payment_status, ...): a job that stopped running shows as '
  'an old last heartbeat.';
create index job_heartbeats_job_idx on reserve.job_heartbeats (job, finished_at desc);
alter table reserve.job_heartbeats enable row level security;
revoke all on reserve.job_heartbeats from public, anon, authenticated;
grant select on reserve.job_heartbeats to service_role;

create function reserve.record_job_heartbeat(p_job text, p_started_at timestamptz, p_ok boolean, p_summary jsonb default '{}'::jsonb)
returns reserve.job_heartbeats
language plpgsql
security definer
set search_path = ''
as $$
declare
  h reserve.job_heartbeats;
begin
  if p_job is null or p_started_at is null or p_ok is null then
    raise exception using errcode = 'RC001', message = 'p_job, p_started_at and p_ok are required';
  end if;
  insert into reserve.job_heartbeats (job, started_at, ok, summary)
  values (p_job, p_started_at, p_ok, coalesce(p_summary, '{}'::jsonb))
  returning * into h;
  return h;
end
$$;
comment on function reserve.record_job_heartbeat(text, timestamptz, boolean, jsonb) is
  'Leaves the heartbeat of one run of a scheduled job, with its summary.';
revoke all on function reserve.record_job_heartbeat(text, timestamptz, boolean, jsonb) from public;
grant execute on function reserve.record_job_heartbeat(text, timestamptz, boolean, jsonb) to service_role;

create view reserve.job_last_runs with (security_invoker = true) as
select distinct on (job) job, started_at, finished_at, ok, summary, now() - finished_at as age
from reserve.job_heartbeats
order by job, finished_at desc;
comment on view reserve.job_last_runs is 'The last run of each scheduled job and how long ago it finished.';
revoke all on reserve.job_last_runs from public, anon, authenticated;
grant select on reserve.job_last_runs to service_role;

-- Reconciliation with each provider: the reconcile edge function lists a provider's objects for a window
-- (Stripe's PaymentIntents, MercadoPago's payment search, OpenPIX's charge list) page by page, and hands
-- each page, normalized to reserve.provider_update, to reconcile_provider_objects, which compares them
-- with our payments and records every difference as a typed item (unique per provider, kind and object:
-- a rerun finds the same item, not a new one). What the provider paid and we have unpaid is repaired
-- through the state machine (attach_provider_payment + apply_payment_status, as a poll would), a missing
-- fee through post_provider_fee; the item stays as evidence with repaired_at. The rest waits for a person
-- (alert reconciliation_unrepaired). A run keeps its cursor and a heartbeat, so a call bounded in time
-- resumes where the last one stopped; finish_reconciliation_run then finds what we have and the provider
-- did not list, and compares the receivable with the balance the provider reports.

create type reserve.reconciliation_item_kind as enum (
  'paid_unknown', 'paid_not_recorded', 'ours_missing_there', 'amount_mismatch', 'currency_mismatch',
  'status_mismatch', 'refund_mismatch', 'duplicate_charge', 'fee_missing', 'payout_mismatch');
comment on type reserve.reconciliation_item_kind is
  'paid_unknown: paid at the provider, no payment of ours; paid_not_recorded: paid there, unpaid (or unattached) here; '
  'ours_missing_there: our paid payment the provider did not list; amount/currency_mismatch: the provider''s '
  'payment is for another amount or currency than ours; status_mismatch: paid here, not there (or failed there, '
  'pending here); refund_mismatch: refunded amounts differ; duplicate_charge: a second paid provider payment '
  'for one of ours; fee_missing: the provider charged a fee we had not booked; payout_mismatch: the receivable '
  'differs from the balance the provider holds for us.';

create table reserve.reconciliation_runs (
  id            uuid primary key default gen_random_uuid(),
  provider      text not null check (provider in ('stripe', 'mercadopago', 'openpix')),
  window_from   timestamptz not null,
  window_to     timestamptz not null,
  status        text not null default 'running' check (status in ('running', 'done', 'failed')),
  cursor        jsonb,
  started_at    timestamptz not null default now(),
  heartbeat_at  timestamptz not null default now(),
  finished_at   timestamptz,
  objects       integer not null default 0,
  provider_calls integer not null default 0,
  items         integer not null default 0,
  repaired      integer not null default 0,
  unrepaired    integer not null default 0,
  error_message text,
  requested_by  text not null default current_user,
  check (window_to > window_from),
  check ((status = 'running') = (finished_at is null))
);
-- one open run per provider and window: a second call resumes it
create unique index reconciliation_runs_open_key on reserve.reconciliation_runs (provider, window_from, window_to) where status = 'running';
create index reconciliation_runs_finished_idx on reserve.reconciliation_runs (provider, finished_at desc) where status = 'done';
alter table reserve.reconciliation_runs enable row level security;
revoke all on reserve.reconciliation_runs from public, anon, authenticated;
grant select on reserve.reconciliation_runs to service_role;
comment on table reserve.reconciliation_runs is
  'One reconciliation of a provider''s objects created in [window_from, window_to): its cursor (where the listing '
  'stopped), heartbeat, counts (objects compared, provider calls, items found, repaired, left for a person) and status.';

create table reserve.reconciliation_run_objects (
  run_id    uuid not null references reserve.reconciliation_runs (id) on delete cascade,
  object_id text not null,
  primary key (run_id, object_id)
);
alter table reserve.reconciliation_run_objects enable row level security;
revoke all on reserve.reconciliation_run_objects from public, anon, authenticated;
grant select on reserve.reconciliation_run_objects to service_role;
comment on table reserve.reconciliation_run_objects is
  'The provider payments a running reconciliation has seen, so that its finish can tell which of ours the provider did not list. Emptied when the run finishes.';

create table reserve.reconciliation_items (
  id           uuid primary key default gen_random_uuid(),
  run_id       uuid not null references reserve.reconciliation_runs (id),
  last_run_id  uuid not null references reserve.reconciliation_runs (id),
  provider     text not null,
  kind         reserve.reconciliation_item_kind not null,
  object_id    text not null check (length(object_id) between 1 and 255),
  payment_id   uuid references reserve.payments (id),
  ours         jsonb,
  theirs       jsonb,
  details      text not null,
  detected_at  timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  repaired_at  timestamptz,
  repair_note  text,
  resolved_at  timestamptz,
  resolved_by  text,
  resolution   text,
  unique (provider, kind, object_id),
  check ((resolved_at is null) = (resolved_by is null))
);
create index reconciliation_items_open_idx on reserve.reconciliation_items (detected_at) where repaired_at is null and resolved_at is null;
create index reconciliation_items_payment_idx on reserve.reconciliation_items (payment_id) where payment_id is not null;
alter table reserve.reconciliation_items enable row level security;
revoke all on reserve.reconciliation_items from public, anon, authenticated;
grant select on reserve.reconciliation_items to service_role;
comment on table reserve.reconciliation_items is
  'A difference between a provider''s books and ours, found by reconciliation (unique per provider, kind and '
  'provider object: a rerun updates last_seen_at). repaired_at when it was repaired through the normal paths '
  '(the item stays as evidence); resolved_at when a person closed it (resolve_reconciliation_item).';

insert into reserve.settings (key, value, description) values
  ('reconciliation_stale_hours', '26', 'A provider with payments older than a day and no reconciliation finished within this many hours raises reconciliation_stale.');

-- ---------------------------------------------------------------- runs

create function reserve.begin_reconciliation_run(p_provider text, p_from timestamptz, p_to timestamptz)
returns reserve.reconciliation_runs
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reconciliation_runs;
begin
  if p_provider is null or p_provider not in ('stripe', 'mercadopago', 'openpix') then
    raise exception using errcode = 'RC001', message = format('provider %s is unknown', coalesce(p_provider, 'null'));
  end if;
  if p_from is null or p_to is null or p_to <= p_from or p_to - p_from > interval '31 days' then
    raise exception using errcode = 'RC001',
      message = format('a reconciliation window is from < to, at most 31 days (got %s .. %s)', coalesce(p_from::text, 'null'), coalesce(p_to::text, 'null'));
  end if;
  insert into reserve.reconciliation_runs (provider, window_from, window_to, requested_by)
  values (p_provider, p_from, p_to, reserve.current_actor())
  on conflict (provider, window_from, window_to) where status = 'running' do update set heartbeat_at = now()
  returning * into r;
  return r;
end
$$;
comment on function reserve.begin_reconciliation_run(text, timestamptz, timestamptz) is
  'The running reconciliation of a provider for [p_from, p_to) (resumed, its heartbeat renewed), or a new one. RC001 for an unknown provider or a window that is empty or over 31 days.';
revoke all on function reserve.begin_reconciliation_run(text, timestamptz, timestamptz) from public;
grant execute on function reserve.begin_reconciliation_run(text, timestamptz, timestamptz) to service_role;

create function reserve.lock_reconciliation_run(p_run_id uuid)
returns reserve.reconciliation_runs
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reconciliation_runs;
begin
  select * into r from reserve.reconciliation_runs where id = p_run_id for update;
  if not found then
    raise exception using errcode = 'RC802', message = format('reconciliation run %s does not exist', coalesce(p_run_id::text, 'null'));
  end if;
  if r.status <> 'running' then
    raise exception using errcode = 'RC803', message = format('reconciliation run %s is already %s', r.id, r.status);
  end if;
  return r;
end
$$;
revoke all on function reserve.lock_reconciliation_run(uuid) from public;
comment on function reserve.lock_reconciliation_run(uuid) is 'Locks a running reconciliation run; RC802 if none, RC803 if it finished.';

-- One difference, recorded once per provider, kind and object; a rerun brings it up to date.
create function reserve.record_reconciliation_item(
  p_run reserve.reconciliation_runs, p_kind reserve.reconciliation_item_kind, p_object_id text, p_payment_id uuid,
  p_ours jsonb, p_theirs jsonb, p_details text, p_repair_note text default null)
returns reserve.reconciliation_items
language plpgsql
security definer
set search_path = ''
as $$
declare
  i reserve.reconciliation_items;
begin
  insert into reserve.reconciliation_items as x (run_id, last_run_id, provider, kind, object_id, payment_id, ours, theirs,
                                                 details, repaired_at, repair_note)
  values (p_run.id, p_run.id, p_run.provider, p_kind, p_object_id, p_payment_id, p_ours, p_theirs, p_details,
          case when p_repair_note is not null then now() end, p_repair_note)
  on conflict (provider, kind, object_id) do update
    set last_run_id = excluded.last_run_id, last_seen_at = now(), theirs = excluded.theirs,
        payment_id = coalesce(x.payment_id, excluded.payment_id),
        repaired_at = coalesce(x.repaired_at, excluded.repaired_at), repair_note = coalesce(x.repair_note, excluded.repair_note)
  returning * into i;
  return i;
end
$$;
revoke all on function reserve.record_reconciliation_item(reserve.reconciliation_runs, reserve.reconciliation_item_kind, text, uuid, jsonb, jsonb, text, text) from public;
comment on function reserve.record_reconciliation_item(reserve.reconciliation_runs, reserve.reconciliation_item_kind, text, uuid, jsonb, jsonb, text, text) is
  'Records (or refreshes) one reconciliation item; with a repair note it is repaired. Internal.';

-- What money a provider's update says arrived and went back, by our statuses.
create function reserve.provider_says_paid(p_status text) returns boolean
language sql immutable set search_path = '' as
$$ select p_status in ('succeeded', 'refunded', 'partially_refunded', 'disputed') $$;
comment on function reserve.provider_says_paid(text) is 'Whether a payment status means the money arrived (and may since have gone back in part).';
revoke all on function reserve.provider_says_paid(text) from public;

-- One provider payment against ours. Returns how many items it recorded and how many it repaired.
create function reserve.reconcile_provider_payment(p_run reserve.reconciliation_runs, p_update reserve.provider_update,
                                                   out items integer, out repaired integer)
language plpgsql
security definer
set search_path = ''
as $$
declare
  u reserve.provider_update := p_update;
  v reserve.provider_update;
  p reserve.payments;
  theirs jsonb;
  ours jsonb;
  paid_there boolean := reserve.provider_says_paid(u.status);
  paid_here boolean;
  a reserve.payment_status_change;
  why text;
  note text;
  i reserve.reconciliation_items;
  fee_booked boolean;
begin
  items := 0;
  repaired := 0;
  theirs := jsonb_strip_nulls(jsonb_build_object('status', u.status, 'gateway_status', u.gateway_status, 'amount', u.amount,
    'currency', u.currency, 'amount_received', u.amount_received, 'refunded_amount', u.refunded_amount,
    'dispute_amount', u.dispute_amount, 'fee_amount', u.fee_amount, 'payment_reference', u.payment_reference));
  insert into reserve.reconciliation_run_objects (run_id, object_id) values (p_run.id, u.gateway_payment_id) on conflict do nothing;

  select * into p from reserve.payments x where x.provider = p_run.provider and x.gateway_payment_id = u.gateway_payment_id for update;
  if not found and u.payment_reference is not null then
    select * into p from reserve.payments x where x.id = u.payment_reference and x.provider = p_run.provider for update;
    if found and p.gateway_payment_id is not null and p.gateway_payment_id <> u.gateway_payment_id then
      -- ours is another provider payment: this one is a second charge for it
      if paid_there then
        perform reserve.record_reconciliation_item(p_run, 'duplicate_charge', u.gateway_payment_id, p.id,
          jsonb_build_object('gateway_payment_id', p.gateway_payment_id, 'status', p.status, 'amount', p.amount, 'currency', p.currency),
          theirs, format('%s payment %s is a second paid charge for payment %s, which is %s at %s',
                         p_run.provider, u.gateway_payment_id, p.id, p.gateway_payment_id, p_run.provider));
        items := 1;
      end if;
      return;
    end if;
  end if;

  if p.id is null then
    if paid_there then
      perform reserve.record_reconciliation_item(p_run, 'paid_unknown', u.gateway_payment_id, null, null, theirs,
        format('%s payment %s (%s %s) is paid and names %s: no payment of ours', p_run.provider, u.gateway_payment_id,
               coalesce(u.amount_received, u.amount)::text, coalesce(u.currency, '?'),
               coalesce('payment ' || u.payment_reference::text, 'none of ours')));
      items := 1;
    end if;
    return;
  end if;

  ours := jsonb_strip_nulls(jsonb_build_object('status', p.status, 'gateway_payment_id', p.gateway_payment_id, 'amount', p.amount,
    'currency', p.currency, 'received_amount', p.received_amount, 'received_currency', p.received_currency,
    'refunded_amount', p.refunded_amount, 'fee_amount', p.fee_amount));
  paid_here := reserve.provider_says_paid(p.status) and p.gateway_payment_id is not null;
  -- before any repair, whose update may carry the fee and book it on the way
  fee_booked := exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'fee:' || p.id);

  -- what the provider's payment is for
  if u.currency is not null and u.currency <> p.currency then
    perform reserve.record_reconciliation_item(p_run, 'currency_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is in %s, payment %s in %s', p_run.provider, u.gateway_payment_id, u.currency, p.id, p.currency));
    items := items + 1;
  elsif u.amount is not null and u.amount <> p.amount then
    perform reserve.record_reconciliation_item(p_run, 'amount_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is for %s %s, payment %s for %s %s', p_run.provider, u.gateway_payment_id, u.amount,
             coalesce(u.currency, p.currency), p.id, p.amount, p.currency));
    items := items + 1;
  end if;

  if paid_there and not paid_here then
    -- repaired as a poll would: attach the provider payment, then the state machine
    if p.gateway_payment_id is null then
      why := reserve.attach_provider_payment(p, u, 'poll');
    end if;
    if why is null then
      if u.status <> 'succeeded' then
        -- refunded or disputed since: the money arrived first, then went (back) as the update says
        v := u;
        v.status := 'succeeded';
        v.refunded_amount := null;
        v.dispute_amount := null;
        v.refunds := null;
        perform reserve.apply_payment_status(p.id, v, null, 'ignore', 'poll');
      end if;
      a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
      if a.outcome = 'applied' then
        note := format('applied %s -> %s%s', a.previous_status, a.status, coalesce(', reservation ' || a.finalize_outcome, ''));
      end if;
    end if;
    i := reserve.record_reconciliation_item(p_run, 'paid_not_recorded', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is %s there, payment %s is %s here%s', p_run.provider, u.gateway_payment_id, u.status, p.id, p.status,
             coalesce(': ' || why, case when a.outcome is distinct from 'applied' then format(': not applied (%s)', coalesce(a.outcome, 'no outcome')) end, '')),
      note);
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  elsif paid_here and not paid_there then
    -- we booked money the provider does not say it has: a person looks
    perform reserve.record_reconciliation_item(p_run, 'status_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('payment %s is %s here, %s payment %s is %s there', p.id, p.status, p_run.provider, u.gateway_payment_id, u.status));
    items := items + 1;
  elsif not paid_here and not paid_there and u.status <> p.status and u.status in ('failed', 'cancelled', 'expired')
        and p.status in ('pending', 'processing') then
    -- the provider gave up on it and we are still waiting: the poller's answer, given now
    a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
    i := reserve.record_reconciliation_item(p_run, 'status_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is %s there, payment %s was %s here', p_run.provider, u.gateway_payment_id, u.status, p.id, p.status),
      case when a.outcome = 'applied' then format('applied %s -> %s', a.previous_status, a.status) end);
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  end if;

  if paid_there and reserve.provider_says_paid(p.status) then
    -- refunds: more there is news we missed (applied); more here is money we think went back and did not
    if coalesce(u.refunded_amount, 0) + coalesce(u.dispute_amount, 0) > 0 or p.refunded_amount > 0 then
      if coalesce(u.refunded_amount, 0) > p.refunded_amount and u.dispute_amount is null then
        a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
        i := reserve.record_reconciliation_item(p_run, 'refund_mismatch', u.gateway_payment_id, p.id, ours, theirs,
          format('%s refunded %s of payment %s, we had %s', p_run.provider, u.refunded_amount, p.id, p.refunded_amount),
          case when a.outcome = 'applied' then format('applied refund: %s -> %s', a.previous_status, a.status) end);
        items := items + 1;
        repaired := repaired + (i.repaired_at is not null)::int;
        select * into p from reserve.payments where id = p.id;
      elsif coalesce(u.refunded_amount, 0) < p.refunded_amount and u.dispute_amount is null then
        perform reserve.record_reconciliation_item(p_run, 'refund_mismatch', u.gateway_payment_id, p.id, ours, theirs,
          format('we booked %s refunded of payment %s, %s shows %s', p.refunded_amount, p.id, p_run.provider, coalesce(u.refunded_amount, 0)));
        items := items + 1;
      end if;
    end if;
    -- the provider's fee, booked once from its own figure
    if u.fee_amount > 0 and p.received_amount is not null then
      if not fee_booked then
        perform reserve.post_provider_fee(p.id, u.fee_amount, coalesce(u.currency, p.received_currency));
        i := reserve.record_reconciliation_item(p_run, 'fee_missing', u.gateway_payment_id, p.id, ours, theirs,
          format('%s charged %s %s on payment %s, not booked', p_run.provider, u.fee_amount, coalesce(u.currency, p.received_currency), p.id),
          format('posted fee:%s', p.id));
        items := items + 1;
        repaired := repaired + 1;
      end if;
    end if;
  end if;
end
$$;
revoke all on function reserve.reconcile_provider_payment(reserve.reconciliation_runs, reserve.provider_update) from public;
comment on function reserve.reconcile_provider_payment(reserve.reconciliation_runs, reserve.provider_update) is
  'Compares one provider payment with ours and records the differences (reconciliation_items); repairs paid there / '
  'unpaid here, failed there / pending here and refunds we missed through apply_payment_status, and a missing fee '
  'through post_provider_fee. Internal: reconcile_provider_objects calls it.';

create function reserve.reconcile_provider_objects(p_run_id uuid, p_updates jsonb, p_cursor jsonb default null,
                                                   p_provider_calls integer default 0)
returns reserve.reconciliation_runs
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reconciliation_runs;
  e jsonb;
  u reserve.provider_update;
  res record;
  n integer := 0;
  found_items integer := 0;
  fixed integer := 0;
begin
  if p_updates is null or jsonb_typeof(p_updates) <> 'array' or jsonb_array_length(p_updates) > 1000 then
    raise exception using errcode = 'RC001', message = 'p_updates is a JSON array of at most 1000 provider updates';
  end if;
  r := reserve.lock_reconciliation_run(p_run_id);
  if coalesce(current_setting('reserve.reason', true), '') = '' then
    perform set_config('reserve.reason', format('reconciliation %s of %s', r.id, r.provider), true);
  end if;
  for e in select value from jsonb_array_elements(p_updates) loop
    u := reserve.as_provider_update(e);
    if u.gateway_payment_id is null or u.status is null then
      raise exception using errcode = 'RC001',
        message = format('reconciliation %s: every provider update needs gateway_payment_id and status', r.id);
    end if;
    res := reserve.reconcile_provider_payment(r, u);
    n := n + 1;
    found_items := found_items + res.items;
    fixed := fixed + res.repaired;
  end loop;
  update reserve.reconciliation_runs
  set cursor = coalesce(p_cursor, cursor), heartbeat_at = now(), objects = objects + n,
      provider_calls = provider_calls + greatest(coalesce(p_provider_calls, 0), 0),
      items = items + found_items, repaired = repaired + fixed
  where id = r.id
  returning * into r;
  return r;
end
$$;
comment on function reserve.reconcile_provider_objects(uuid, jsonb, jsonb, integer) is
  'One page of a provider''s payments (a JSON array of provider updates, as reserve.as_provider_update takes them) '
  'compared with ours in one transaction: items recorded, repairs applied, the run''s cursor, counts and heartbeat '
  'moved on. RC001 for a malformed page, RC802/RC803 for a run that does not exist or finished.';
revoke all on function reserve.reconcile_provider_objects(uuid, jsonb, jsonb, integer) from public;
grant execute on function reserve.reconcile_provider_objects(uuid, jsonb, jsonb, integer) to service_role;

create function reserve.reconcile_provider_payouts(p_run_id uuid, p_payouts jsonb)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reconciliation_runs := reserve.lock_reconciliation_run(p_run_id);
  e jsonb;
  n integer := 0;
begin
  if p_payouts is null or jsonb_typeof(p_payouts) <> 'array' then
    raise exception using errcode = 'RC001', message = 'p_payouts is a JSON array of provider payouts';
  end if;
  for e in select value from jsonb_array_elements(p_payouts) loop
    perform reserve.record_provider_payout(r.provider, reserve.as_provider_payout(e));
    n := n + 1;
  end loop;
  update reserve.reconciliation_runs set heartbeat_at = now() where id = r.id;
  return n;
end
$$;
comment on function reserve.reconcile_provider_payouts(uuid, jsonb) is
  'Records the provider''s payouts listed by a run (record_provider_payout: paid moves the receivable to the bank, a failure after paid is reversed). Returns how many.';
revoke all on function reserve.reconcile_provider_payouts(uuid, jsonb) from public;
grant execute on function reserve.reconcile_provider_payouts(uuid, jsonb) to service_role;

-- The end of a run: our paid payments of the window the provider did not list, and the receivable
-- against the balance the provider reports (p_balances: [{currency, amount}] of available + pending;
-- null when the provider reports none).
create function reserve.finish_reconciliation_run(p_run_id uuid, p_balances jsonb default null, p_error text default null,
                                                  p_provider_calls integer default 0)
returns reserve.reconciliation_runs
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reconciliation_runs := reserve.lock_reconciliation_run(p_run_id);
  p record;
  b record;
  found_items integer := 0;
  receivable bigint;
  in_flight bigint;
begin
  if p_error is null then
    for p in
      select x.id, x.gateway_payment_id, x.status, x.amount, x.currency, x.received_amount, x.refunded_amount
      from reserve.payments x
      where x.provider = r.provider and x.created_at >= r.window_from and x.created_at < r.window_to
        and x.gateway_payment_id is not null and reserve.provider_says_paid(x.status)
        and not exists (select 1 from reserve.reconciliation_run_objects o where o.run_id = r.id and o.object_id = x.gateway_payment_id)
    loop
      perform reserve.record_reconciliation_item(r, 'ours_missing_there', p.gateway_payment_id, p.id,
        jsonb_strip_nulls(to_jsonb(p) - 'id'), null,
        format('payment %s is %s here as %s payment %s, which %s did not list for %s .. %s', p.id, p.status, r.provider,
               p.gateway_payment_id, r.provider, r.window_from, r.window_to));
      found_items := found_items + 1;
    end loop;

    if p_balances is not null then
      if jsonb_typeof(p_balances) <> 'array' then
        raise exception using errcode = 'RC001', message = 'p_balances is a JSON array of {currency, amount}';
      end if;
      for b in select x.currency, x.amount from jsonb_to_recordset(p_balances) x(currency text, amount bigint) loop
        receivable := reserve.ledger_account_balance(reserve.receivable_account(r.provider), b.currency);
        -- a payout on its way has left the provider's balance and is not yet ours at the bank
        select coalesce(sum(o.amount), 0) into in_flight from reserve.provider_payouts o
        where o.provider = r.provider and o.currency = b.currency and o.status in ('pending', 'in_transit');
        if receivable - in_flight <> b.amount then
          perform reserve.record_reconciliation_item(r, 'payout_mismatch',
            format('balance:%s:%s', b.currency, to_char(r.window_to at time zone 'UTC', 'YYYY-MM-DD')), null,
            jsonb_build_object('receivable', receivable, 'payouts_in_flight', in_flight, 'currency', b.currency),
            jsonb_build_object('balance', b.amount, 'currency', b.currency),
            format('%s holds %s %s for us; receivable_%s is %s with %s in payouts on their way (difference %s)',
                   r.provider, b.amount, b.currency, r.provider, receivable, in_flight, receivable - in_flight - b.amount));
          found_items := found_items + 1;
        end if;
      end loop;
    end if;
  end if;

  delete from reserve.reconciliation_run_objects where run_id = r.id;
  update reserve.reconciliation_runs x
  set status = case when p_error is null then 'done' else 'failed' end, finished_at = now(), heartbeat_at = now(),
      error_message = left(p_error, 2000), items = x.items + found_items,
      provider_calls = x.provider_calls + greatest(coalesce(p_provider_calls, 0), 0),
      unrepaired = (select count(*) from reserve.reconciliation_items i
                    where i.last_run_id = r.id and i.repaired_at is null and i.resolved_at is null)
  where x.id = r.id
  returning * into r;
  return r;
end
$$;
comment on function reserve.finish_reconciliation_run(uuid, jsonb, text, integer) is
  'Ends a run: records ours_missing_there for our paid payments created in the window that the provider did not list, '
  'and payout_mismatch when receivable_<provider> minus payouts on their way differs from the balance the provider '
  'reports (p_balances [{currency, amount}], null when it reports none). With p_error the run is failed and nothing '
  'is concluded. RC802/RC803 for a run that does not exist or finished.';
revoke all on function reserve.finish_reconciliation_run(uuid, jsonb, text, integer) from public;
grant execute on function reserve.finish_reconciliation_run(uuid, jsonb, text, integer) to service_role;

create function reserve.resolve_reconciliation_item(p_item_id uuid, p_resolution text)
returns reserve.reconciliation_items
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('resolve_reconciliation_item', p_resolution);
  i reserve.reconciliation_items;
begin
  update reserve.reconciliation_items
  set resolved_at = coalesce(resolved_at, now()), resolved_by = coalesce(resolved_by, who), resolution = coalesce(resolution, p_resolution)
  where id = p_item_id
  returning * into i;
  if not found then
    raise exception using errcode = 'RC804', message = format('reconciliation item %s does not exist', coalesce(p_item_id::text, 'null'));
  end if;
  return i;
end
$$;
comment on function reserve.resolve_reconciliation_item(uuid, text) is
  'An operator (reserve.actor) closes a reconciliation item with what was done (a refund at the provider, a recovery). Idempotent; RC501 without operator and reason, RC804 for no such item.';
revoke all on function reserve.resolve_reconciliation_item(uuid, text) from public;
grant execute on function reserve.resolve_reconciliation_item(uuid, text) to service_role;

create view reserve.open_reconciliation_items with (security_invoker = true) as
select i.id, i.provider, i.kind, i.object_id, i.payment_id, i.details, i.ours, i.theirs, i.detected_at, i.last_seen_at,
       i.run_id, i.last_run_id
from reserve.reconciliation_items i
where i.repaired_at is null and i.resolved_at is null
order by i.detected_at;
comment on view reserve.open_reconciliation_items is
  'Reconciliation items no repair fixed and no person closed: what reconciliation_unrepaired counts.';
revoke all on reserve.open_reconciliation_items from public, anon, authenticated;
grant select on reserve.open_reconciliation_items to service_role;

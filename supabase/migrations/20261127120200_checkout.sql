-- The checkout's database side: one call opens (or retries) a checkout and records the payment attempt
-- before any provider is asked, so the provider call carries our idempotency key and a crash between
-- the two leaves a row the poller can see. A second call records what the provider answered, or gives
-- the holds back if it refused.

create table reserve.rate_limit_counters (
  bucket       text not null check (length(bucket) between 1 and 300),
  window_start timestamptz not null,
  hits         integer not null check (hits >= 0),
  primary key (bucket, window_start)
);
comment on table reserve.rate_limit_counters is
  'Fixed-window request counters (one row per bucket and window), written by reserve.take_rate_limit. '
  'Old windows are worthless after the hour; retention removes them.';
alter table reserve.rate_limit_counters enable row level security;
revoke all on reserve.rate_limit_counters from public, anon, authenticated;
grant select on reserve.rate_limit_counters to service_role;

create function reserve.take_rate_limit(p_bucket text, p_limit integer, p_window interval default interval '1 hour')
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  w timestamptz;
  used integer;
begin
  if p_bucket is null or p_limit is null or p_limit < 1 or p_window is null or p_window <= interval '0' then
    raise exception using errcode = 'RC001', message = 'p_bucket, p_limit >= 1 and a positive p_window are required';
  end if;
  w := to_timestamp(floor(extract(epoch from now()) / extract(epoch from p_window)) * extract(epoch from p_window));
  insert into reserve.rate_limit_counters as c (bucket, window_start, hits) values (p_bucket, w, 1)
  on conflict (bucket, window_start) do update set hits = c.hits + 1
  returning hits into used;
  if used > p_limit then
    -- the raise undoes the increment: a refused request does not use up the next window's allowance
    raise exception using errcode = 'RC109',
      message = format('%s made %s requests in the window starting %s; the limit is %s', p_bucket, used - 1, w, p_limit),
      hint = format('retry after %s seconds', ceil(extract(epoch from (w + p_window - now())))::integer);
  end if;
  return p_limit - used;
end
$$;
comment on function reserve.take_rate_limit(text, integer, interval) is
  'Counts one request in p_bucket''s current fixed window; RC109 (hint: seconds to wait) past p_limit. '
  'Returns the requests left in the window.';
revoke all on function reserve.take_rate_limit(text, integer, interval) from public;

create function reserve.begin_checkout(
  p_client_id         text,
  p_method            text,
  p_provider          text,
  p_unit_id           uuid default null,
  p_check_in          date default null,
  p_check_out         date default null,
  p_guests            integer default null,
  p_booking_intent_id uuid default null,
  p_guest_name        text default null,
  p_guest_email       text default null,
  p_metadata          jsonb default '{}'::jsonb,
  p_default_provider  text default null)
returns table (booking_intent_id uuid, payment_id uuid, attempt integer, idempotency_key text,
               provider text, method text, amount bigint, currency text, payment_status text,
               gateway_payment_id text, payment_expires_at timestamptz, hold_expires_at timestamptz,
               unit_id uuid, check_in date, check_out date, nights integer, guests integer,
               guest_name text, guest_email text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
  p reserve.payments;
  tried integer;
begin
  if p_method is null or p_method not in ('card', 'pix') then
    raise exception using errcode = 'RC001', message = format('method must be card or pix, not %s', coalesce(p_method, 'null'));
  end if;

  if p_booking_intent_id is null then
    if p_client_id is not null then
      perform reserve.take_rate_limit('checkout:client:' || p_client_id,
                                      reserve.setting_int('checkouts_per_client_per_hour'));
    end if;
    bi := reserve.create_booking_intent(p_unit_id, p_check_in, p_check_out, p_guests, p_method, p_client_id,
                                        p_guest_name, p_guest_email, coalesce(p_metadata, '{}'::jsonb));
    if bi.amount < reserve.setting_int('min_payment_amount') then
      raise exception using errcode = 'RC110',
        message = format('unit %s from %s to %s costs %s centavos, below the minimum of %s',
                         bi.unit_id, bi.check_in, bi.check_out, bi.amount, reserve.setting_int('min_payment_amount'));
    end if;
    if bi.amount > reserve.setting_int('max_payment_amount') then
      raise exception using errcode = 'RC111',
        message = format('unit %s from %s to %s costs %s centavos, above the maximum of %s',
                         bi.unit_id, bi.check_in, bi.check_out, bi.amount, reserve.setting_int('max_payment_amount'));
    end if;
  else
    bi := reserve.lock_booking_intent(p_booking_intent_id);
    -- someone else's intent is answered as missing: its id says nothing about whether it exists
    if p_client_id is not null and bi.client_id is distinct from p_client_id then
      raise exception using errcode = 'RC107', message = format('booking intent %s not found', p_booking_intent_id);
    end if;
    if not exists (select 1 from reserve.payments x where x.booking_intent_id = bi.id and x.status in ('pending', 'processing')) then
      select count(*) into tried from reserve.payments x where x.booking_intent_id = bi.id;
      if tried >= reserve.setting_int('max_payment_attempts') then
        raise exception using errcode = 'RC109',
          message = format('booking intent %s already made %s payment attempts; the limit is %s', bi.id, tried,
                           reserve.setting_int('max_payment_attempts')),
          hint = 'start a new checkout';
      end if;
    end if;
  end if;

  -- a retry that names no provider continues with the one the intent's attempts used
  p := reserve.create_payment(bi.id,
         coalesce(p_provider,
                  (select x.provider from reserve.payments x where x.booking_intent_id = bi.id and x.method = p_method
                   order by x.attempt desc limit 1),
                  p_default_provider),
         p_method, bi.amount, null, null, jsonb_build_object('client_id', p_client_id));
  return query select bi.id, p.id, p.attempt, p.idempotency_key, p.provider, p.method, p.amount, p.currency,
                      p.status, p.gateway_payment_id, p.expires_at, bi.expires_at, bi.unit_id, bi.check_in,
                      bi.check_out, bi.nights, bi.guests, bi.guest_name, bi.guest_email;
end
$$;
comment on function reserve.begin_checkout(text, text, text, uuid, date, date, integer, uuid, text, text, jsonb, text) is
  'Opens a checkout (unit, dates, guests: a new intent holding its nights) or retries one '
  '(p_booking_intent_id), and records the payment attempt whose idempotency_key the provider call must '
  'carry. A retry while an attempt is in flight returns that attempt; a retry without p_provider uses '
  'the provider of the intent''s last attempt of that method, else p_default_provider. RC109 past the per-client or '
  'per-intent limits, RC110/RC111 outside the amount bounds; nothing is written when it raises.';
revoke all on function reserve.begin_checkout(text, text, text, uuid, date, date, integer, uuid, text, text, jsonb, text) from public;
grant execute on function reserve.begin_checkout(text, text, text, uuid, date, date, integer, uuid, text, text, jsonb, text) to service_role;

create function reserve.release_intent_if_idle(p_booking_intent_id uuid, p_reason text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- another attempt in flight still needs the nights; a converted intent has a reservation instead
  if exists (select 1 from reserve.payments x
             where x.booking_intent_id = p_booking_intent_id and x.status in ('pending', 'processing'))
     or not exists (select 1 from reserve.booking_intents bi
                    where bi.id = p_booking_intent_id and bi.status in ('pending', 'expired')) then
    return false;
  end if;
  perform reserve.release_booking_intent(p_booking_intent_id, p_reason);
  return true;
end
$$;
comment on function reserve.release_intent_if_idle(uuid, text) is
  'Releases an intent''s holds unless a payment of it is still in flight or it was converted; true if released.';
revoke all on function reserve.release_intent_if_idle(uuid, text) from public;

create function reserve.abort_checkout(p_payment_id uuid, p_error_code text, p_error_message text)
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
begin
  if p_payment_id is null or coalesce(p_error_code, '') = '' then
    raise exception using errcode = 'RC001', message = 'p_payment_id and p_error_code are required';
  end if;
  p := reserve.lock_payment(p_payment_id);
  -- only an attempt the provider never took up is given up: once it has the provider's id, the guest
  -- may hold its QR code or client secret, and news from the provider wins over our guess
  if p.status = 'pending' and p.gateway_payment_id is null then
    perform reserve.apply_payment_status(p.id, 'failed', null, null, p_error_code, p_error_message);
    perform reserve.release_intent_if_idle(p.booking_intent_id, 'provider_error: ' || p_error_code);
  end if;
  select * into p from reserve.payments where id = p.id;
  return p;
end
$$;
comment on function reserve.abort_checkout(uuid, text, text) is
  'The provider refused or did not answer the payment''s creation: marks the pending attempt failed '
  'with the error and releases the intent''s holds. Idempotent; a payment the provider already took '
  '(it has a gateway id) or moved on is left alone. A late success is still honoured.';
revoke all on function reserve.abort_checkout(uuid, text, text) from public;
grant execute on function reserve.abort_checkout(uuid, text, text) to service_role;

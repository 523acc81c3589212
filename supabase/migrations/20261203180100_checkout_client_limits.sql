-- A client's budget of checkouts counts the refused ones too, and a client holds at most a few unpaid stays
-- at once. Before, a checkout refused for its nights, its stay rules or its amount rolled its count back
-- with the refusal, so probing availability cost nothing; and one client could hold every night of a city
-- with pending checkouts it never paid (each one holds its nights until it expires).
-- - begin_checkout serialises one client's new checkouts (a transaction-scoped advisory lock on the client)
--   and refuses a new one while the client holds max_unpaid_holds_per_client pending, unexpired intents
--   (RC112 too_many_holds; the hint says when the oldest hold expires). A retry of an intent is not new.
-- - count_refused_checkout(client) takes one from the hour's budget after a refusal: the edge function
--   calls it in its own transaction, since the refusal's rollback undid begin_checkout's count.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC112', 'too_many_holds', 429, 'The client already holds the most unpaid stays at once (setting max_unpaid_holds_per_client); pay or cancel one, or retry when the oldest hold expires (the hint''s seconds).');

insert into reserve.settings (key, value, description) values
  ('max_unpaid_holds_per_client', '3', 'Pending, unexpired booking intents (stays held, not yet paid) one client (JWT sub) may have at once.');
alter table reserve.settings add constraint settings_max_unpaid_holds_check check (
  key <> 'max_unpaid_holds_per_client'
  or (jsonb_typeof(value) = 'number' and (value #>> '{}')::numeric = trunc((value #>> '{}')::numeric)
      and (value #>> '{}')::numeric between 1 and 1000));

create or replace function reserve.begin_checkout(p_client_id text, p_method text, p_provider text, p_unit_id uuid DEFAULT NULL::uuid, p_check_in date DEFAULT NULL::date, p_check_out date DEFAULT NULL::date, p_guests integer DEFAULT NULL::integer, p_booking_intent_id uuid DEFAULT NULL::uuid, p_guest_name text DEFAULT NULL::text, p_guest_email text DEFAULT NULL::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_default_provider text DEFAULT NULL::text)
 RETURNS TABLE(booking_intent_id uuid, payment_id uuid, attempt integer, idempotency_key text, provider text, method text, amount bigint, currency text, payment_status text, gateway_payment_id text, payment_expires_at timestamp with time zone, hold_expires_at timestamp with time zone, unit_id uuid, check_in date, check_out date, nights integer, guests integer, guest_name text, guest_email text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $$
declare
  bi reserve.booking_intents;
  p reserve.payments;
  tried integer;
  held integer;
  oldest timestamptz;
begin
  if p_method is null or p_method not in ('card', 'pix') then
    raise exception using errcode = 'RC001', message = format('method must be card or pix, not %s', coalesce(p_method, 'null'));
  end if;

  if p_booking_intent_id is null then
    if p_client_id is not null then
      -- one client's new checkouts one after another, so N at once cannot all see room under the cap
      perform pg_advisory_xact_lock(hashtextextended('reserve.checkout_client:' || p_client_id, 0));
      perform reserve.take_rate_limit('checkout:client:' || p_client_id,
                                      reserve.setting_int('checkouts_per_client_per_hour'));
      select count(*), min(x.expires_at) into held, oldest
      from reserve.booking_intents x
      where x.client_id = p_client_id and x.status = 'pending' and x.expires_at > now();
      if held >= reserve.setting_int('max_unpaid_holds_per_client') then
        raise exception using errcode = 'RC112',
          message = format('client %s already holds %s unpaid stays; the limit is %s (setting max_unpaid_holds_per_client)',
                           p_client_id, held, reserve.setting_int('max_unpaid_holds_per_client')),
          hint = format('pay or cancel one, or retry after %s seconds, when the oldest hold expires',
                        greatest(1, ceil(extract(epoch from (oldest - now()))))::integer);
      end if;
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
$$
;
comment on function reserve.begin_checkout(text, text, text, uuid, date, date, integer, uuid, text, text, jsonb, text) is 'Opens a checkout (unit, dates, guests: a new intent holding its nights) or retries one (p_booking_intent_id), and records the payment attempt whose idempotency_key the provider call must carry. A retry while an attempt is in flight returns that attempt; a retry without p_provider uses the provider of the intent''s last attempt of that method, else p_default_provider. RC109 past the per-client or per-intent limits, RC112 while the client already holds max_unpaid_holds_per_client unpaid stays, RC110/RC111 outside the amount bounds; nothing is written when it raises.';

create function reserve.count_refused_checkout(p_client_id text) returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_client_id is null then
    raise exception using errcode = 'RC001', message = 'p_client_id is required';
  end if;
  -- the same bucket and window as begin_checkout's count; a refusal past the limit is never refused again
  perform reserve.take_rate_limit('checkout:client:' || p_client_id, 2147483647);
end
$$;
comment on function reserve.count_refused_checkout(text) is 'Takes one checkout from the client''s hourly budget (checkouts_per_client_per_hour) for a checkout begin_checkout refused: the refusal rolled its own count back.';
revoke all on function reserve.count_refused_checkout(text) from public;
grant execute on function reserve.count_refused_checkout(text) to service_role;

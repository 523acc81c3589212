-- A checkout retry sends the provider the intent's payer (its guest_email), so that a retry of an attempt
-- (its idempotency key) sends the body its first call sent. An intent opened without an e-mail (a card
-- checkout whose token carried none) kept none: a PIX retry of it sent the retry's own e-mail, and the next
-- retry, the guest's app resuming with only booking_intent_id and method, sent none (MercadoPago refused it
-- before the call and the attempt the provider may have created was aborted) or another (a key reused with
-- another body). Now the first e-mail a retry brings is the intent's, so every later call sends it.

CREATE OR REPLACE FUNCTION reserve.begin_checkout(p_client_id text, p_method text, p_provider text, p_unit_id uuid DEFAULT NULL::uuid, p_check_in date DEFAULT NULL::date, p_check_out date DEFAULT NULL::date, p_guests integer DEFAULT NULL::integer, p_booking_intent_id uuid DEFAULT NULL::uuid, p_guest_name text DEFAULT NULL::text, p_guest_email text DEFAULT NULL::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_default_provider text DEFAULT NULL::text)
 RETURNS TABLE(booking_intent_id uuid, payment_id uuid, attempt integer, idempotency_key text, provider text, method text, amount bigint, currency text, payment_status text, gateway_payment_id text, payment_expires_at timestamp with time zone, hold_expires_at timestamp with time zone, unit_id uuid, check_in date, check_out date, nights integer, guests integer, guest_name text, guest_email text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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

  if p_booking_intent_id is null and p_client_id is not null then
    -- one client's new checkouts one after another, so N at once cannot all see room under the cap
    perform pg_advisory_xact_lock(hashtextextended('reserve.checkout_client:' || p_client_id, 0));
    perform reserve.take_rate_limit('checkout:client:' || p_client_id,
                                    reserve.setting_int('checkouts_per_client_per_hour'));
    -- the same stay asked again by the same client while its hold lives is a retry of that checkout: the
    -- first answer may never have arrived (a 503 after the hold was taken, a connection that died), and a
    -- second intent would find the client's own hold in the way (409). It still counts in the hour's budget.
    select x.id into p_booking_intent_id from reserve.booking_intents x
    where x.client_id = p_client_id and x.status = 'pending' and x.expires_at > now()
      and x.unit_id = p_unit_id and x.check_in = p_check_in and x.check_out = p_check_out and x.guests = p_guests
    order by x.created_at desc limit 1;
  end if;

  if p_booking_intent_id is null then
    if p_client_id is not null then
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
    -- someone else's intent is answered as a missing one is, word for word, and before its lock (a guest
    -- must not hold another's row): its id says nothing about whether it exists
    if p_client_id is not null
       and not exists (select 1 from reserve.booking_intents x where x.id = p_booking_intent_id and x.client_id = p_client_id) then
      raise exception using errcode = 'RC107', message = format('booking intent %s does not exist', p_booking_intent_id);
    end if;
    bi := reserve.lock_booking_intent(p_booking_intent_id);
    if not exists (select 1 from reserve.payments x where x.booking_intent_id = bi.id and x.status in ('pending', 'processing')) then
      select count(*) into tried from reserve.payments x where x.booking_intent_id = bi.id;
      if tried >= reserve.setting_int('max_payment_attempts') then
        raise exception using errcode = 'RC109',
          message = format('booking intent %s already made %s payment attempts; the limit is %s', bi.id, tried,
                           reserve.setting_int('max_payment_attempts')),
          hint = 'start a new checkout';
      end if;
    end if;
    if bi.guest_email is null and p_guest_email is not null then
      -- the payer this attempt's provider call sends from now on (checkout sends the intent's): a retry that
      -- carries none, or another, must send its key the same body (MercadoPago refuses a key reused with
      -- another e-mail, or asks none at all)
      update reserve.booking_intents x set guest_email = p_guest_email where x.id = bi.id returning * into bi;
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
$function$
;

comment on function reserve.begin_checkout(p_client_id text, p_method text, p_provider text, p_unit_id uuid, p_check_in date, p_check_out date, p_guests integer, p_booking_intent_id uuid, p_guest_name text, p_guest_email text, p_metadata jsonb, p_default_provider text) is 'Opens a checkout (unit, dates, guests: a new intent holding its nights) or retries one (p_booking_intent_id), and records the payment attempt whose idempotency_key the provider call must carry. A retry while an attempt is in flight returns that attempt; a retry without p_provider uses the provider of the intent''s last attempt of that method, else p_default_provider. RC109 past the per-client or per-intent limits, RC112 while the client already holds max_unpaid_holds_per_client unpaid stays, RC110/RC111 outside the amount bounds; nothing is written when it raises. A retry''s p_guest_email becomes the intent''s when it had none: the payer every later call of its attempts sends.';

grant execute on function reserve.begin_checkout(p_client_id text, p_method text, p_provider text, p_unit_id uuid, p_check_in date, p_check_out date, p_guests integer, p_booking_intent_id uuid, p_guest_name text, p_guest_email text, p_metadata jsonb, p_default_provider text) to service_role;

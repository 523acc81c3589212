-- The payloads that cross from the edge into SQL, as composite types (pgledger's TRANSFER_REQUEST):
-- one normalized provider update (what a webhook, a poll, a refund lookup or an operator reading the
-- provider's dashboard says about a payment), one provider refund, one webhook event, and the results
-- several functions return. The edge builds them from JSON with as_provider_update / as_webhook_event /
-- as_provider_refund, which refuse unknown keys and wrong types (RC001) instead of ignoring them as
-- jsonb_populate_record would: a misspelt "amount_recieved" must never read as "no amount".

create type reserve.provider_update as (
  status             text,
  gateway_payment_id text,
  payment_reference  uuid,
  end_to_end_id      text,
  amount             bigint,
  currency           text,
  amount_received    bigint,
  refunded_amount    bigint,
  dispute_amount     bigint,
  fee_amount         bigint,
  refunds            jsonb,
  event_at           timestamptz,
  gateway_status     text,
  error_code         text,
  error_message      text,
  provider_object    jsonb
);
comment on type reserve.provider_update is
  'What a provider says about one payment, normalized: status (our payment status), gateway_payment_id '
  '(the provider''s id), payment_reference (our payments.id as the provider echoes it: metadata '
  'payment_id, external_reference, correlationID), end_to_end_id (the PIX endToEndId), amount and '
  'currency (what the provider''s payment is for, minor units), amount_received (the money it says it '
  'received), refunded_amount (cumulative), dispute_amount, fee_amount, refunds ([{refund_id, amount, '
  'status, end_to_end_id}]), event_at (the provider''s time of the news), gateway_status, error_code, '
  'error_message and the provider''s object as evidence. Null means the provider did not say.';

create type reserve.provider_refund as (
  refund_id       text,
  status          text,
  amount          bigint,
  currency        text,
  end_to_end_id   text,
  provider_object jsonb
);
comment on type reserve.provider_refund is
  'One refund as the provider reports it: its id, status pending | succeeded | failed, amount and currency '
  '(minor units), the PIX endToEndId of the money sent back, and the provider''s object.';

create type reserve.webhook_event as (
  provider         text,
  event_id         text,
  event_type       text,
  event_at         timestamptz,
  payload          jsonb,
  lookup           jsonb,
  processing_error text,
  poison           text,
  note             text
);
comment on type reserve.webhook_event is
  'A verified provider delivery: provider, event_id (the dedupe key; over 255 characters it is hashed), '
  'event_type, event_at, payload (sanitized evidence), lookup (what to ask the provider again when the '
  'event itself carries no status), processing_error (a transient failure before the database: the event '
  'fails and is retried), poison (why it can never be applied: recorded dead at once, an alert) and note '
  '(why it carries nothing to apply, e.g. the provider does not know the payment: recorded as ignored).';

create type reserve.webhook_result as (
  webhook_id        uuid,
  provider          text,
  event_id          text,
  webhook_status    text,
  duplicate         boolean,
  attempts          integer,
  payment_id        uuid,
  outcome           text,
  payment_status    text,
  reservation_id    uuid,
  confirmation_code text,
  finalize_outcome  text,
  error_message     text
);
comment on type reserve.webhook_result is
  'What recording, retrying or replaying one webhook event did: the event''s row and status (completed, '
  'ignored, failed, dead), whether it was a duplicate, the payment and what happened to it (outcome '
  'applied | unchanged | stale | ignored | refused | duplicate | failed), and the reservation if one was made.';

create type reserve.payment_status_change as (
  payment_id        uuid,
  previous_status   text,
  status            text,
  outcome           text,
  reservation_id    uuid,
  confirmation_code text,
  finalize_outcome  text,
  finalize_error    text
);
comment on type reserve.payment_status_change is
  'What applying a provider update to a payment did: outcome applied | unchanged | stale | ignored | '
  'refused (the provider''s money disagrees with ours: see money_discrepancies), and the finalize result '
  'of a success.';

create type reserve.poll_result as (
  payment_id        uuid,
  outcome           text,
  status            text,
  reservation_id    uuid,
  confirmation_code text,
  finalize_outcome  text,
  next_poll_at      timestamptz
);
comment on type reserve.poll_result is 'What one poll of one payment did, and when it is polled next.';

-- The values a provider update may hold, whoever built it (JSON from the edge, a row() by hand).
create function reserve.check_provider_update(p reserve.provider_update) returns reserve.provider_update
language plpgsql
immutable
set search_path = ''
as $$
declare
  bad text;
begin
  if p.status is not null and p.status not in ('pending', 'processing', 'succeeded', 'failed', 'cancelled', 'expired',
                                               'refunded', 'partially_refunded', 'disputed') then
    bad := format('status %s is not a payment status', p.status);
  elsif p.currency is not null and p.currency !~ '^[A-Z]{3}$' then
    bad := format('currency %s is not an ISO 4217 code like BRL', p.currency);
  elsif least(p.amount, p.amount_received, p.refunded_amount, p.dispute_amount, p.fee_amount) < 0
        or greatest(p.amount, p.amount_received, p.refunded_amount, p.dispute_amount, p.fee_amount) > 9007199254740991 then
    bad := 'amounts are whole minor units between 0 and 2^53 - 1';
  elsif length(p.gateway_payment_id) not between 1 and 255 then
    bad := 'gateway_payment_id is 1..255 characters';
  elsif length(p.end_to_end_id) not between 1 and 64 then
    bad := 'end_to_end_id is 1..64 characters';
  elsif length(p.gateway_status) > 255 or length(p.error_code) > 255 or length(p.error_message) > 2000 then
    bad := 'gateway_status and error_code are at most 255 characters, error_message 2000';
  elsif p.refunds is not null and jsonb_typeof(p.refunds) <> 'array' then
    bad := 'refunds is a JSON array';
  elsif p.provider_object is not null and jsonb_typeof(p.provider_object) not in ('object', 'array') then
    bad := 'provider_object is a JSON object';
  end if;
  if bad is not null then
    raise exception using errcode = 'RC001',
      message = format('provider update%s: %s', coalesce(' for ' || p.gateway_payment_id, ''), bad);
  end if;
  return p;
end
$$;
comment on function reserve.check_provider_update(reserve.provider_update) is
  'Returns the update if its values are possible (a status, ISO currency, amounts 0..2^53-1, bounded '
  'texts), else RC001 naming what is wrong.';
revoke all on function reserve.check_provider_update(reserve.provider_update) from public;

-- Key by key: JSON type first, so a wrong type is our RC001 naming the key, never a cast error.
create function reserve.json_record_keys_check(p jsonb, p_what text, p_keys text[], p_types text[]) returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  k text;
  t text;
  i integer;
begin
  if p is null or jsonb_typeof(p) <> 'object' then
    raise exception using errcode = 'RC001', message = format('%s must be a JSON object', p_what);
  end if;
  for k, t in select key, jsonb_typeof(value) from jsonb_each(p) loop
    i := array_position(p_keys, k);
    if i is null then
      raise exception using errcode = 'RC001',
        message = format('%s: unknown key %s (known: %s)', p_what, left(k, 64), array_to_string(p_keys, ', '));
    end if;
    continue when t = 'null';
    if p_types[i] = 'integer' then
      if t <> 'number' or (p ->> k)::numeric <> trunc((p ->> k)::numeric)
         or (p ->> k)::numeric not between 0 and 9007199254740991 then
        raise exception using errcode = 'RC001',
          message = format('%s: %s must be a whole number of minor units between 0 and 2^53 - 1, got %s', p_what, k, left(p ->> k, 64));
      end if;
    elsif p_types[i] in ('string', 'uuid', 'timestamptz') then
      if t <> 'string' then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a string, got %s', p_what, k, t);
      end if;
      if p_types[i] = 'uuid' and (p ->> k) !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a uuid, got %s', p_what, k, left(p ->> k, 64));
      end if;
      if p_types[i] = 'timestamptz' then
        begin
          perform (p ->> k)::timestamptz;
        exception when others then
          raise exception using errcode = 'RC001', message = format('%s: %s must be a timestamp, got %s', p_what, k, left(p ->> k, 64));
        end;
      end if;
    elsif p_types[i] = 'array' then
      if t <> 'array' then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a JSON array, got %s', p_what, k, t);
      end if;
    elsif p_types[i] = 'object' then
      if t not in ('object', 'array') then
        raise exception using errcode = 'RC001', message = format('%s: %s must be a JSON object, got %s', p_what, k, t);
      end if;
    end if;
  end loop;
end
$$;
comment on function reserve.json_record_keys_check(jsonb, text, text[], text[]) is
  'RC001 unless p is a JSON object whose keys are among p_keys and whose values have the JSON type '
  'p_types names (integer, string, uuid, timestamptz, array, object); null values pass.';
revoke all on function reserve.json_record_keys_check(jsonb, text, text[], text[]) from public;

create function reserve.as_provider_update(p jsonb) returns reserve.provider_update
language plpgsql
stable
strict
set search_path = ''
as $$
begin
  perform reserve.json_record_keys_check(p, 'provider update',
    array['status', 'gateway_payment_id', 'payment_reference', 'end_to_end_id', 'amount', 'currency', 'amount_received',
          'refunded_amount', 'dispute_amount', 'fee_amount', 'refunds', 'event_at', 'gateway_status', 'error_code',
          'error_message', 'provider_object'],
    array['string', 'string', 'uuid', 'string', 'integer', 'string', 'integer', 'integer', 'integer', 'integer',
          'array', 'timestamptz', 'string', 'string', 'string', 'object']);
  return reserve.check_provider_update(jsonb_populate_record(null::reserve.provider_update, p));
end
$$;
comment on function reserve.as_provider_update(jsonb) is
  'A provider_update from JSON ({"status": "succeeded", "amount_received": 64000, "currency": "BRL", ...}), '
  'RC001 for an unknown key, a wrong type or an impossible value; null for null. What operators pass to recover_payment.';
revoke all on function reserve.as_provider_update(jsonb) from public;
grant execute on function reserve.as_provider_update(jsonb) to service_role;

create function reserve.as_provider_refund(p jsonb) returns reserve.provider_refund
language plpgsql
stable
strict
set search_path = ''
as $$
declare
  r reserve.provider_refund;
begin
  perform reserve.json_record_keys_check(p, 'provider refund',
    array['refund_id', 'status', 'amount', 'currency', 'end_to_end_id', 'provider_object'],
    array['string', 'string', 'integer', 'string', 'string', 'object']);
  r := jsonb_populate_record(null::reserve.provider_refund, p);
  if r.status is null or r.status not in ('pending', 'succeeded', 'failed') then
    raise exception using errcode = 'RC001', message = format('provider refund: status %s is not pending, succeeded or failed', coalesce(r.status, 'null'));
  end if;
  if r.currency is not null and r.currency !~ '^[A-Z]{3}$' then
    raise exception using errcode = 'RC001', message = format('provider refund: currency %s is not an ISO 4217 code', r.currency);
  end if;
  if length(r.refund_id) not between 1 and 255 or length(r.end_to_end_id) not between 1 and 64 then
    raise exception using errcode = 'RC001', message = 'provider refund: refund_id is 1..255 characters, end_to_end_id 1..64';
  end if;
  return r;
end
$$;
comment on function reserve.as_provider_refund(jsonb) is
  'A provider_refund from JSON; RC001 for an unknown key, a wrong type, or a status other than pending, succeeded, failed.';
revoke all on function reserve.as_provider_refund(jsonb) from public;
grant execute on function reserve.as_provider_refund(jsonb) to service_role;

create function reserve.as_webhook_event(p jsonb) returns reserve.webhook_event
language plpgsql
stable
set search_path = ''
as $$
begin
  perform reserve.json_record_keys_check(p, 'webhook event',
    array['provider', 'event_id', 'event_type', 'event_at', 'payload', 'lookup', 'processing_error', 'poison', 'note'],
    array['string', 'string', 'string', 'timestamptz', 'object', 'object', 'string', 'string', 'string']);
  return jsonb_populate_record(null::reserve.webhook_event, p);
end
$$;
comment on function reserve.as_webhook_event(jsonb) is
  'A webhook_event from JSON; RC001 for an unknown key or a wrong type.';
revoke all on function reserve.as_webhook_event(jsonb) from public;
grant execute on function reserve.as_webhook_event(jsonb) to service_role;

-- Our own decisions about a payment (the checkout gave up, the poller expired it, an operator failed it)
-- go through the same state machine as the provider's news, as an update that says nothing about money.
create function reserve.status_update(p_status text, p_gateway_status text default null, p_error_code text default null,
                                      p_error_message text default null, p_provider_object jsonb default null)
returns reserve.provider_update
language sql
immutable
set search_path = ''
as $$
  select reserve.check_provider_update(row(p_status, null, null, null, null, null, null, null, null, null, null, null,
                                           p_gateway_status, p_error_code, p_error_message, p_provider_object)::reserve.provider_update)
$$;
comment on function reserve.status_update(text, text, text, text, jsonb) is
  'A provider_update carrying only a status (and error): for changes we decide, never for money received.';
revoke all on function reserve.status_update(text, text, text, text, jsonb) from public;
grant execute on function reserve.status_update(text, text, text, text, jsonb) to service_role;

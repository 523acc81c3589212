-- recover_payment takes what the provider's dashboard shows as a reserve.provider_update (an operator
-- writes it with reserve.as_provider_update('{"status": "succeeded", "amount_received": ..., "currency":
-- "BRL"}')) and goes through apply_payment_status like every other path: a success for another amount
-- or currency than ours is booked as owed back, never as a stay. mark_payment_failed passes its own
-- decision the same way.

drop function reserve.recover_payment(uuid, text, text, bigint, text);

create function reserve.recover_payment(p_payment_id uuid, p_update reserve.provider_update, p_reason text)
returns reserve.payment_status_change
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('recover_payment', p_reason);
  u reserve.provider_update := reserve.check_provider_update(p_update);
  p reserve.payments;
  a reserve.payment_status_change;
  why text;
begin
  if u.status is null then
    raise exception using errcode = 'RC001',
      message = format('recover_payment %s: the update needs the status the provider shows', coalesce(p_payment_id::text, 'null'));
  end if;
  u.gateway_status := coalesce(u.gateway_status, 'manual:' || u.status);
  select * into p from reserve.payments x where x.id = p_payment_id for update;
  if not found then
    raise exception using errcode = 'RC201', message = format('payment %s does not exist', p_payment_id);
  end if;
  if p.gateway_payment_id is null and u.gateway_payment_id is not null then
    why := reserve.attach_provider_payment(p, u, 'recovery');
    if why is not null then
      a.payment_id := p.id;
      a.previous_status := p.status;
      a.status := p.status;
      a.outcome := 'refused';
      a.finalize_error := why;
      return a;
    end if;
  end if;
  -- the same state machine as webhooks and the poller; an illegal move is refused (RC202)
  a := reserve.apply_payment_status(p.id, u, null, 'raise', 'recovery');
  -- a repeat changes nothing, not even the note
  if a.outcome = 'applied' then
    update reserve.payments x
    set metadata = x.metadata || jsonb_build_object('manual_recovery', jsonb_build_object(
          'by', who, 'reason', p_reason, 'provider_status', u.status, 'amount_received', u.amount_received,
          'currency', u.currency, 'at', now()))
    where x.id = a.payment_id;
    if a.status in ('failed', 'cancelled', 'expired') then
      perform reserve.release_intent_if_idle(p.booking_intent_id, 'payment_' || a.status || '_by_operator');
    end if;
  end if;
  return a;
end
$$;
comment on function reserve.recover_payment(uuid, reserve.provider_update, text) is
  'Applies what the provider''s dashboard shows (reserve.as_provider_update(''{"status": "succeeded", '
  '"amount_received": 64000, "currency": "BRL"}'')) to a stuck or PIX payment through apply_payment_status: '
  'a success for our price is finalized (reservation and receipt); another amount or currency is booked as '
  'owed back and refunded (outcome applied, finalize_outcome amount_mismatch); a refund beyond the money '
  'received is refused (outcome refused). A failure, cancellation or expiry frees the intent''s nights if '
  'nothing else is in flight. Idempotent (a repeat writes nothing); RC001 for a success without the amount '
  'received, RC202 for an illegal move, RC501 without operator and reason.';
revoke all on function reserve.recover_payment(uuid, reserve.provider_update, text) from public;
grant execute on function reserve.recover_payment(uuid, reserve.provider_update, text) to service_role;

create or replace function reserve.mark_payment_failed(p_payment_id uuid, p_reason text, p_error_code text default 'manual_recovery')
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('mark_payment_failed', p_reason);
  p reserve.payments;
begin
  p := reserve.lock_payment(p_payment_id);
  if p.status = 'failed' then
    return p;
  end if;
  if p.status not in ('pending', 'processing') then
    raise exception using errcode = 'RC202',
      message = format('payment %s is %s: only a payment in flight is marked failed (money that arrived is refunded, not failed)', p.id, p.status);
  end if;
  perform reserve.apply_payment_status(p.id, reserve.status_update('failed', 'manual:failed', p_error_code, left(p_reason, 2000)),
                                       null, 'raise', 'recovery');
  update reserve.payments x
  set metadata = x.metadata || jsonb_build_object('manual_recovery', jsonb_build_object('by', who, 'reason', p_reason, 'at', now()))
  where x.id = p.id;
  perform reserve.release_intent_if_idle(p.booking_intent_id, 'payment_failed_by_operator');
  select * into p from reserve.payments x where x.id = p.id;
  return p;
end
$$;

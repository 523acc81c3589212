-- A receiver's Retry-After was a floor without a ceiling: PagerDuty answering 429 with Retry-After: 31536000
-- put the page a year out. It is now capped at notification_backoff_seconds.max (10 minutes), the longest
-- any failed notification waits. (The deliverer caps it too, so what it passes fits the integer.)
CREATE OR REPLACE FUNCTION reserve.record_notification_result(p_id bigint, p_delivered boolean, p_status integer DEFAULT NULL::integer, p_error text DEFAULT NULL::text, p_retry_after_seconds integer DEFAULT NULL::integer)
 RETURNS reserve.notification_outbox
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  backoff jsonb := (select s.value from reserve.settings s where s.key = 'notification_backoff_seconds');
  n reserve.notification_outbox;
  delay numeric;
begin
  if p_id is null or p_delivered is null then
    raise exception using errcode = 'RC001', message = 'p_id and p_delivered are required';
  end if;
  select * into n from reserve.notification_outbox o where o.id = p_id for update;
  -- a late second answer for a delivered row changes nothing
  if n.delivered_at is not null then
    return n;
  end if;
  if n.id is null or n.claimed_until is null then
    raise exception using errcode = 'RC605', message = format('notification %s not found or not claimed', p_id);
  end if;
  if p_delivered then
    update reserve.notification_outbox o
       set delivered_at = now(), claimed_until = null, last_status = p_status, last_error = null
     where o.id = p_id returning * into n;
  else
    -- base * 2^(attempts-1), capped, with full jitter in its upper half; a receiver's Retry-After is a floor,
    -- itself capped at the backoff's max (a receiver asking for a year does not put a page a year out)
    delay := least((backoff ->> 'max')::numeric, (backoff ->> 'base')::numeric * power(2, greatest(n.attempts - 1, 0)))
             * (0.5 + random() / 2);
    delay := greatest(delay, least(coalesce(p_retry_after_seconds, 0), (backoff ->> 'max')::numeric));
    update reserve.notification_outbox o
       set claimed_until = null, last_status = p_status, last_error = left(coalesce(p_error, 'failed'), 1000),
           next_attempt_at = now() + make_interval(secs => delay)
     where o.id = p_id returning * into n;
  end if;
  return n;
end
$function$
;

comment on function reserve.record_notification_result(p_id bigint, p_delivered boolean, p_status integer, p_error text, p_retry_after_seconds integer) is 'Settles a claimed notification: delivered, or failed with the receiver''s status and error, due again after exponential backoff with jitter (setting notification_backoff_seconds) or the Retry-After it asked for (at most the backoff max), whichever is later. Idempotent once delivered; RC605 unknown or unclaimed.';

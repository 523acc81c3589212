-- A run's heartbeat after a page is the time the page was judged (clock_timestamp()), not the time its
-- transaction began (now()). The edge takes that heartbeat as the point its next provider read comes
-- after (p_read_after): a page that waited at a lock carried the time from before the wait, so a payment
-- changed during the wait looked changed after the next read too, and the read that should judge it (the
-- run's second read of what changed while it listed) skipped it again. Restated whole; only the
-- heartbeat changes.

CREATE OR REPLACE FUNCTION reserve.reconcile_provider_objects(p_run_id uuid, p_updates jsonb, p_cursor jsonb DEFAULT NULL::jsonb, p_provider_calls integer DEFAULT 0, p_read_after timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
    res := reserve.reconcile_provider_payment(r, u, p_read_after);
    n := n + 1;
    found_items := found_items + res.items;
    fixed := fixed + res.repaired;
  end loop;
  update reserve.reconciliation_runs
  set cursor = coalesce(p_cursor, cursor), heartbeat_at = clock_timestamp(), objects = objects + n,
      provider_calls = provider_calls + greatest(coalesce(p_provider_calls, 0), 0),
      items = items + found_items, repaired = repaired + fixed
  where id = r.id
  returning * into r;
  return r;
end
$function$
;

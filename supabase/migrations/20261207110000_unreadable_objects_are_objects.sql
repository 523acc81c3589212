-- record_unreadable_provider_objects raised 22023 (jsonb_to_recordset's own error) for a list holding
-- something that is no object: RC001, naming what it takes, as for any malformed list.
CREATE OR REPLACE FUNCTION reserve.record_unreadable_provider_objects(p_run_id uuid, p_objects jsonb)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  r reserve.reconciliation_runs;
  o record;
  object_id text;
  n integer := 0;
begin
  if p_objects is null or jsonb_typeof(p_objects) <> 'array' or jsonb_array_length(p_objects) > 10000
     or exists (select 1 from jsonb_array_elements(p_objects) x where jsonb_typeof(x) <> 'object') then
    raise exception using errcode = 'RC001', message = 'p_objects is a JSON array of at most 10000 unreadable provider objects';
  end if;
  r := reserve.lock_reconciliation_run(p_run_id);
  for o in select * from jsonb_to_recordset(p_objects) x(kind text, object_id text, reason text, provider_object jsonb) loop
    if o.kind is null or o.kind not in ('payment', 'payout', 'dispute') or coalesce(o.reason, '') = '' then
      raise exception using errcode = 'RC001',
        message = format('reconciliation %s: every unreadable object needs a kind (payment, payout, dispute) and a reason', r.id);
    end if;
    object_id := case when length(o.object_id) between 1 and 255 then o.object_id
                      else 'sha256:' || encode(sha256(convert_to(coalesce(o.provider_object, 'null'::jsonb)::text, 'UTF8')), 'hex') end;
    perform reserve.record_reconciliation_item(r, 'unreadable_object', object_id,
      case when o.kind = 'payment' and object_id = o.object_id then
        (select p.id from reserve.payments p where p.provider = r.provider and p.gateway_payment_id = object_id) end,
      null, jsonb_build_object('kind', o.kind, 'reason', left(o.reason, 2000), 'object', o.provider_object),
      format('%s listed %s %s, which cannot be read: %s', r.provider, o.kind, object_id, left(o.reason, 500)));
    if o.kind = 'payment' and object_id = o.object_id then
      insert into reserve.reconciliation_run_objects (run_id, object_id) values (r.id, object_id) on conflict do nothing;
    end if;
    n := n + 1;
  end loop;
  update reserve.reconciliation_runs set items = items + n, heartbeat_at = now() where id = r.id returning * into r;
  return r;
end
$function$;

-- The objects of a listing that reconcile could not read, recorded before the page they came in: one
-- item each (unreadable_object), named by the provider's id or, without a usable one, by a hash of what
-- was listed, so a rerun refreshes it instead of adding another. A payment set aside was listed: its
-- finish does not call it missing there.
create function reserve.record_unreadable_provider_objects(p_run_id uuid, p_objects jsonb) returns reserve.reconciliation_runs
  language plpgsql security definer set search_path = '' as $$
declare
  r reserve.reconciliation_runs;
  o record;
  object_id text;
  n integer := 0;
begin
  if p_objects is null or jsonb_typeof(p_objects) <> 'array' or jsonb_array_length(p_objects) > 10000 then
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
$$;

comment on function reserve.record_unreadable_provider_objects(p_run_id uuid, p_objects jsonb) is 'Sets aside the objects of a provider''s listing that reconcile could not read (a JSON array of {kind payment|payout|dispute, object_id, reason, provider_object}): an unreadable_object item each, for a person; a payment among them counts as listed. RC001 for a malformed array, RC802/RC803 for a run that does not exist or finished.';

revoke all on function reserve.record_unreadable_provider_objects(uuid, jsonb) from public, anon, authenticated;
grant execute on function reserve.record_unreadable_provider_objects(uuid, jsonb) to service_role;

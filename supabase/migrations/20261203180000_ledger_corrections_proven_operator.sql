-- The two people of a 4-eyes ledger correction are proven, the way the on-call actions prove theirs
-- (oncall_actor): a personal login role that is a member of reserve_operator (the login was the proof),
-- or a shared connection (service_role: the ops console) passing p_operator, the subject of an operator
-- token the calling function verified. reserve.actor alone is what a session typed, so one session could
-- propose as one name and approve as another; it no longer names anyone here. A personal role cannot act
-- under another name, and the proposer and the approver are compared on the proven names.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'reserve_operator') then
    create role reserve_operator nologin;
  end if;
end
$$;
comment on role reserve_operator is 'Operators'' personal login roles are members (create role alice login in role reserve_operator): on-call actions and 4-eyes ledger corrections from the SQL editor or psql act as session_user.';
grant usage on schema reserve to reserve_operator;

create or replace function reserve.oncall_actor(p_action text, p_operator text, p_reason text) returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  shared constant text[] := array['postgres', 'supabase_admin', 'service_role', 'authenticator', 'authenticated',
                                  'anon', 'supabase_auth_admin', 'supabase_storage_admin', 'dashboard_user'];
  operator text := nullif(btrim(p_operator), '');
  who text;
begin
  if coalesce(length(btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC604', message = format('%s needs a reason', p_action);
  end if;
  if session_user <> all (shared) then
    -- any other login (a reporting user, a replication user) is not an operator by being personal
    if not pg_has_role(session_user, 'reserve_operator', 'member') then
      raise exception using errcode = 'RC604',
        message = format('%s: %s is not a member of reserve_operator', p_action, session_user);
    end if;
    if operator is not null and operator <> session_user then
      raise exception using errcode = 'RC604',
        message = format('%s: signed in as %s, cannot act as %s', p_action, session_user, operator);
    end if;
    who := session_user;
  elsif operator is null then
    raise exception using errcode = 'RC604',
      message = format('%s needs a proven operator: sign in with your own role, or call through the ops console with an operator token', p_action);
  else
    who := operator;
  end if;
  if length(who) > 200 then
    raise exception using errcode = 'RC604', message = format('%s: operator names are at most 200 characters', p_action);
  end if;
  perform set_config('reserve.actor', who, true);
  perform set_config('reserve.reason', format('%s by %s: %s', p_action, who, p_reason), true);
  return who;
end
$$;
comment on function reserve.oncall_actor(text, text, text) is 'The proven operator of an on-call action or a ledger correction decision: session_user when it is a personal login role in reserve_operator, else p_operator (the subject of an operator token verified by the calling edge function). RC604 without a proven identity or a reason. Sets reserve.actor and reserve.reason for the audit trail.';

drop function reserve.propose_ledger_correction(text, jsonb, uuid);
drop function reserve.approve_ledger_correction(uuid, text);
drop function reserve.reject_ledger_correction(uuid, text);

create function reserve.propose_ledger_correction(p_reason text, p_entries jsonb, p_target_transaction_id uuid default null,
                                                  p_operator text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who text;
begin
  if coalesce(length(btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC001', message = 'a correction needs a reason';
  end if;
  who := reserve.oncall_actor('propose_ledger_correction', p_operator, p_reason);
  perform reserve.assert_correction_balances(p_entries, p_target_transaction_id);
  insert into reserve.ledger_corrections (target_transaction_id, entries, reason, proposed_by)
  values (p_target_transaction_id, p_entries, p_reason, who)
  returning * into c;
  return c;
end
$$;
comment on function reserve.propose_ledger_correction(text, jsonb, uuid, text) is 'Step 1 of 4-eyes: records a correction (legs as in post_ledger_transaction, entry_type default correction) that must balance alone or balance p_target_transaction_id. The proposer is proven (oncall_actor): a personal role in reserve_operator, or p_operator from a verified operator token; RC604 otherwise.';

create function reserve.approve_ledger_correction(p_correction_id uuid, p_note text, p_operator text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who text := reserve.oncall_actor('approve_ledger_correction', p_operator, p_note);
  tx reserve.ledger_transactions;
  target reserve.ledger_transactions;
begin
  c := reserve.lock_correction(p_correction_id);
  if c.status = 'approved' then
    return c;
  end if;
  if c.status <> 'proposed' then
    raise exception using errcode = 'RC408', message = format('ledger correction %s is already %s', c.id, c.status);
  end if;
  if who = c.proposed_by then
    raise exception using errcode = 'RC407',
      message = format('ledger correction %s was proposed by %s, who cannot approve it too', c.id, who);
  end if;

  if c.target_transaction_id is null then
    perform set_config('reserve.ledger_correction', 'approved', true);
    tx := reserve.post_ledger_transaction('correction', 'Correction: ' || c.reason, c.entries, 'correction:' || c.id);
    perform set_config('reserve.ledger_correction', '', true);
  else
    -- serialise with any other correction of the same transaction, then re-check on current legs
    select * into target from reserve.ledger_transactions where id = c.target_transaction_id for no key update;
    perform reserve.assert_correction_balances(c.entries, c.target_transaction_id);
    perform reserve.write_ledger_entries(target, c.entries, 'correction', 'Correction ' || c.id || ': ' || c.reason);
    tx := target;
  end if;

  update reserve.ledger_corrections
  set status = 'approved', decided_by = who, decided_at = now(), decision_note = p_note, transaction_id = tx.id
  where id = c.id
  returning * into c;
  return c;
end
$$;
comment on function reserve.approve_ledger_correction(uuid, text, text) is 'Step 2 of 4-eyes: a second proven person (oncall_actor) posts a proposed correction, with a note. Idempotent once approved. RC604 without a proven approver or a note, RC407 if the approver proposed it, RC408 if it was rejected.';

create function reserve.reject_ledger_correction(p_correction_id uuid, p_note text, p_operator text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who text := reserve.oncall_actor('reject_ledger_correction', p_operator, p_note);
begin
  c := reserve.lock_correction(p_correction_id);
  if c.status <> 'proposed' then
    raise exception using errcode = 'RC408', message = format('ledger correction %s is already %s', c.id, c.status);
  end if;
  if who = c.proposed_by then
    raise exception using errcode = 'RC407',
      message = format('ledger correction %s was proposed by %s; another person decides', c.id, who);
  end if;
  update reserve.ledger_corrections
  set status = 'rejected', decided_by = who, decided_at = now(), decision_note = p_note
  where id = c.id
  returning * into c;
  return c;
end
$$;
comment on function reserve.reject_ledger_correction(uuid, text, text) is 'Rejects a proposed correction: a second proven person (oncall_actor), with a note. RC604 without one, RC407 if it is the proposer.';

revoke all on function reserve.propose_ledger_correction(text, jsonb, uuid, text) from public;
revoke all on function reserve.approve_ledger_correction(uuid, text, text) from public;
revoke all on function reserve.reject_ledger_correction(uuid, text, text) from public;
grant execute on function reserve.propose_ledger_correction(text, jsonb, uuid, text) to service_role, reserve_operator;
grant execute on function reserve.approve_ledger_correction(uuid, text, text) to service_role, reserve_operator;
grant execute on function reserve.reject_ledger_correction(uuid, text, text) to service_role, reserve_operator;

-- an operator in psql also acts on incidents and silences as themself
grant execute on function reserve.acknowledge_incident(text, text, text), reserve.post_incident_update(text, text, text),
  reserve.resolve_incident(text, text, text) to reserve_operator;

update reserve.error_codes
set description = 'An on-call action or a ledger correction decision needs an identity proven by a personal login role in reserve_operator or a verified operator token, and a reason.'
where sqlstate = 'RC604';
update reserve.error_codes
set description = 'A correction must be approved by someone other than its proposer, both proven.'
where sqlstate = 'RC407';

-- and checks, as the runbook's correction steps end, that the transaction balances again
grant execute on function reserve.find_ledger_imbalances(date) to reserve_operator;

-- The proposer is proven by correction_actor (a name is taken only from the ops console's login, with
-- the verified token's subject) and recorded with that subject, which 4-eyes compares.

create or replace function reserve.propose_ledger_correction(p_reason text, p_entries jsonb, p_target_transaction_id uuid default null,
                                                             p_operator text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who reserve.proven_operator;
begin
  if coalesce(length(btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC001', message = 'a correction needs a reason';
  end if;
  who := reserve.correction_actor('propose_ledger_correction', p_operator, p_reason);
  perform reserve.assert_correction_balances(p_entries, p_target_transaction_id);
  insert into reserve.ledger_corrections (target_transaction_id, entries, reason, proposed_by, proposed_by_subject)
  values (p_target_transaction_id, p_entries, p_reason, who.name, who.subject)
  returning * into c;
  return c;
end
$$;
comment on function reserve.propose_ledger_correction(text, jsonb, uuid, text) is 'Step 1 of 4-eyes: records a correction (legs as in post_ledger_transaction, entry_type default correction) that must balance alone or balance p_target_transaction_id. The proposer is proven (correction_actor): a personal role in reserve_operator, or the ops console''s login passing the verified token''s subject and p_operator; RC604 otherwise (the shared SQL editor login, with or without p_operator).';
grant execute on function reserve.propose_ledger_correction(text, jsonb, uuid, text) to reserve_ops_console;

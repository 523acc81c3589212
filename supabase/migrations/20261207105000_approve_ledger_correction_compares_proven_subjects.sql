-- The approver is proven by correction_actor and compared with the proposer on the proven subject (one
-- token sub under two emails, or without one, is one person) and on the normalized name (Alice@x is
-- alice@x): either match is RC407.

create or replace function reserve.approve_ledger_correction(p_correction_id uuid, p_note text, p_operator text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who reserve.proven_operator := reserve.correction_actor('approve_ledger_correction', p_operator, p_note);
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
  if who.subject = c.proposed_by_subject
     or reserve.normalized_operator_name(who.name) = reserve.normalized_operator_name(c.proposed_by) then
    raise exception using errcode = 'RC407',
      message = format('ledger correction %s was proposed by %s (%s); %s (%s) is the same person and cannot approve it too',
                       c.id, c.proposed_by, c.proposed_by_subject, who.name, who.subject);
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
  set status = 'approved', decided_by = who.name, decided_by_subject = who.subject, decided_at = now(),
      decision_note = p_note, transaction_id = tx.id
  where id = c.id
  returning * into c;
  return c;
end
$$;
comment on function reserve.approve_ledger_correction(uuid, text, text) is 'Step 2 of 4-eyes: a second proven person (correction_actor) posts a proposed correction, with a note. Idempotent once approved. RC604 without a proven approver or a note, RC407 if the approver is the proposer (the same proven subject, or the same name after NFKC, trim and lower case), RC408 if it was rejected.';
grant execute on function reserve.approve_ledger_correction(uuid, text, text) to reserve_ops_console;

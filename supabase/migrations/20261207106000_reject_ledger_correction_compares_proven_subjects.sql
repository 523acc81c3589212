-- The rejecter is proven by correction_actor and compared with the proposer as approve_ledger_correction
-- compares: the proven subject, and the normalized name (RC407 on either).

create or replace function reserve.reject_ledger_correction(p_correction_id uuid, p_note text, p_operator text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who reserve.proven_operator := reserve.correction_actor('reject_ledger_correction', p_operator, p_note);
begin
  c := reserve.lock_correction(p_correction_id);
  if c.status <> 'proposed' then
    raise exception using errcode = 'RC408', message = format('ledger correction %s is already %s', c.id, c.status);
  end if;
  if who.subject = c.proposed_by_subject
     or reserve.normalized_operator_name(who.name) = reserve.normalized_operator_name(c.proposed_by) then
    raise exception using errcode = 'RC407',
      message = format('ledger correction %s was proposed by %s (%s); another person decides', c.id, c.proposed_by, c.proposed_by_subject);
  end if;
  update reserve.ledger_corrections
  set status = 'rejected', decided_by = who.name, decided_by_subject = who.subject, decided_at = now(), decision_note = p_note
  where id = c.id
  returning * into c;
  return c;
end
$$;
comment on function reserve.reject_ledger_correction(uuid, text, text) is 'Rejects a proposed correction: a second proven person (correction_actor), with a note. RC604 without one, RC407 if it is the proposer (the same proven subject, or the same name after NFKC, trim and lower case).';
grant execute on function reserve.reject_ledger_correction(uuid, text, text) to reserve_ops_console;

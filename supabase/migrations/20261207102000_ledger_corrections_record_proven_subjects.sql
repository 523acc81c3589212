-- 4-eyes compared the names the proposer and the approver were recorded under (an email, else a token's
-- sub, else a typed p_operator), so one person was two when their email changed, when a token had no
-- email, or when a name differed only in case. Each side now also records its proven subject (the
-- verified token's sub, or the personal login role / the auth user it maps to: correction_actor), and
-- the two must differ. Rows decided before this keep the name they had, as name:<name>.

alter table reserve.ledger_corrections
  add column proposed_by_subject text,
  add column decided_by_subject text;

update reserve.ledger_corrections
set proposed_by_subject = 'name:' || proposed_by,
    decided_by_subject = 'name:' || decided_by
where proposed_by_subject is null;

alter table reserve.ledger_corrections
  alter column proposed_by_subject set not null,
  add constraint ledger_corrections_four_eyes_subject_check check (decided_by_subject is distinct from proposed_by_subject),
  add constraint ledger_corrections_decided_subject_check check ((status = 'proposed') = (decided_by_subject is null));

comment on column reserve.ledger_corrections.proposed_by_subject is 'Who proposed, as proven (correction_actor): auth:<token sub or mapped auth user>, role:<personal login role>; name:<name> for corrections proposed before subjects were recorded.';
comment on column reserve.ledger_corrections.decided_by_subject is 'Who approved or rejected, as proven (correction_actor); never the proposer''s subject.';

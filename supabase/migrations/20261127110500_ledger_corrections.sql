-- Manual ledger corrections need two people (the runbook's 4-eyes rule): one proposes, another
-- approves, both named by reserve.actor. A correction is either a new balanced transaction or legs
-- appended to an imbalanced one so that it balances; nothing is ever edited or deleted.

create table reserve.ledger_corrections (
  id                    uuid primary key default gen_random_uuid(),
  status                text not null default 'proposed' check (status in ('proposed', 'approved', 'rejected')),
  -- set: the legs are appended to this (imbalanced) transaction; null: a new correction transaction
  target_transaction_id uuid references reserve.ledger_transactions (id),
  entries               jsonb not null check (jsonb_typeof(entries) = 'array'),
  reason                text not null check (length(btrim(reason)) > 0),
  proposed_by           text not null,
  proposed_at           timestamptz not null default now(),
  decided_by            text,
  decided_at            timestamptz,
  decision_note         text,
  transaction_id        uuid references reserve.ledger_transactions (id),
  constraint ledger_corrections_four_eyes_check check (decided_by is distinct from proposed_by),
  constraint ledger_corrections_decided_check check ((status = 'proposed') = (decided_at is null)),
  constraint ledger_corrections_posted_check check ((status = 'approved') = (transaction_id is not null))
);
comment on table reserve.ledger_corrections is
  'Proposed manual ledger corrections and their decision (4-eyes: the approver is not the proposer).';
create index ledger_corrections_status_idx on reserve.ledger_corrections (status, proposed_at);
create index ledger_corrections_target_idx on reserve.ledger_corrections (target_transaction_id);
create index ledger_corrections_transaction_idx on reserve.ledger_corrections (transaction_id);

create trigger _900_audit after insert or update or delete on reserve.ledger_corrections
  for each row execute function reserve.audit_row_change();

alter table reserve.ledger_corrections enable row level security;
revoke all on reserve.ledger_corrections from public, anon, authenticated;
grant select on reserve.ledger_corrections to service_role;

-- A person, not the database role: two engineers in the SQL editor are both "postgres".
create function reserve.named_actor() returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  -- a signed-in user's JWT subject is authenticated; reserve.actor (the SQL editor's way) is what the
  -- person says, recorded in the audit trail beside the database session
  who text := coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
                       nullif(current_setting('reserve.actor', true), ''));
begin
  if who is null then
    raise exception using errcode = 'RC407',
      message = 'ledger corrections need a named person: set local reserve.actor = ''you@company'' first';
  end if;
  return who;
end
$$;
comment on function reserve.named_actor() is 'The JWT subject, else reserve.actor; raises RC407 when neither names a person.';
revoke all on function reserve.named_actor() from public;

-- The legs must balance on their own, or make the target balance once appended.
create function reserve.assert_correction_balances(p_entries jsonb, p_target uuid) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  bad record;
begin
  if p_target is null then
    perform reserve.assert_balanced(p_entries, 'correction');
    return;
  end if;
  if not exists (select 1 from reserve.ledger_transactions where id = p_target) then
    raise exception using errcode = 'RC406', message = format('ledger transaction %s does not exist', p_target);
  end if;
  select currency, sum(d) as d, sum(c) as c into bad from (
    select e.currency, case when e.direction = 'debit' then e.amount else 0 end as d,
           case when e.direction = 'credit' then e.amount else 0 end as c
    from reserve.ledger_entries e where e.transaction_id = p_target
    union all
    select p.currency, case when p.direction = 'debit' then p.amount else 0 end,
           case when p.direction = 'credit' then p.amount else 0 end
    from reserve.parse_ledger_entries(p_entries, 'correction') p) legs
  group by currency having sum(d) <> sum(c) limit 1;
  if found then
    raise exception using errcode = 'RC401',
      message = format('ledger transaction %s with the correction would not balance in %s: debits %s, credits %s',
                       p_target, bad.currency, bad.d, bad.c);
  end if;
end
$$;
revoke all on function reserve.assert_correction_balances(jsonb, uuid) from public;
comment on function reserve.assert_correction_balances(jsonb, uuid) is
  'Raises RC401 unless the legs balance alone (no target) or bring the target transaction to balance.';

create function reserve.propose_ledger_correction(p_reason text, p_entries jsonb, p_target_transaction_id uuid default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
begin
  if coalesce(length(btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC001', message = 'a correction needs a reason';
  end if;
  perform reserve.assert_correction_balances(p_entries, p_target_transaction_id);
  insert into reserve.ledger_corrections (target_transaction_id, entries, reason, proposed_by)
  values (p_target_transaction_id, p_entries, p_reason, reserve.named_actor())
  returning * into c;
  return c;
end
$$;
comment on function reserve.propose_ledger_correction(text, jsonb, uuid) is
  'Step 1 of 4-eyes: records a correction (legs as in post_ledger_transaction, entry_type default '
  'correction) that must balance alone or balance p_target_transaction_id. Needs reserve.actor set.';
revoke all on function reserve.propose_ledger_correction(text, jsonb, uuid) from public;
grant execute on function reserve.propose_ledger_correction(text, jsonb, uuid) to service_role;

create function reserve.lock_correction(p_correction_id uuid) returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
begin
  select * into c from reserve.ledger_corrections where id = p_correction_id for no key update;
  if not found then
    raise exception using errcode = 'RC406', message = format('ledger correction %s does not exist', p_correction_id);
  end if;
  return c;
end
$$;
comment on function reserve.lock_correction(uuid) is 'Locks a ledger correction row; RC406 if there is none.';
revoke all on function reserve.lock_correction(uuid) from public;

create function reserve.approve_ledger_correction(p_correction_id uuid, p_note text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who text := reserve.named_actor();
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
    perform set_config('reserve.ledger_writer', 'on', true);
    insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, currency, description, city_code)
    select target.id, e.entry_type, e.account, e.direction, e.amount, e.currency,
           coalesce(e.description, 'Correction ' || c.id || ': ' || c.reason), target.city_code
    from reserve.parse_ledger_entries(c.entries, 'correction') e;
    perform set_config('reserve.ledger_writer', '', true);
    tx := target;
  end if;

  update reserve.ledger_corrections
  set status = 'approved', decided_by = who, decided_at = now(), decision_note = p_note, transaction_id = tx.id
  where id = c.id
  returning * into c;
  return c;
end
$$;
comment on function reserve.approve_ledger_correction(uuid, text) is
  'Step 2 of 4-eyes: a second named person (reserve.actor) posts a proposed correction. Idempotent '
  'once approved. RC407 if the approver proposed it, RC408 if it was rejected.';
revoke all on function reserve.approve_ledger_correction(uuid, text) from public;
grant execute on function reserve.approve_ledger_correction(uuid, text) to service_role;

create function reserve.reject_ledger_correction(p_correction_id uuid, p_note text)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who text := reserve.named_actor();
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
comment on function reserve.reject_ledger_correction(uuid, text) is 'Rejects a proposed correction (a second named person).';
revoke all on function reserve.reject_ledger_correction(uuid, text) from public;
grant execute on function reserve.reject_ledger_correction(uuid, text) to service_role;

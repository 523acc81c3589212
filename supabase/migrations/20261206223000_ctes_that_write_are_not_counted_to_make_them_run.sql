-- Two functions read a data-modifying CTE's rows only to make sure it ran ("+ 0 * (select count(*)
-- from balances)"): PostgreSQL runs every data-modifying statement in WITH exactly once and to
-- completion whether or not the outer query reads it, so the terms did nothing. Same writes.

CREATE OR REPLACE FUNCTION reserve.write_ledger_lines(p_transaction reserve.ledger_transactions, p_lines reserve.ledger_line[], p_default_description text DEFAULT NULL::text)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  line reserve.ledger_line;
  host uuid;
  n integer;
begin
  foreach line in array p_lines loop
    if line.account = 'host_payable' then
      host := reserve.ledger_transaction_host(p_transaction.payment_id, p_transaction.reservation_id);
      exit;
    end if;
  end loop;
  perform set_config('reserve.ledger_writer', 'on', true);
  with legs as (
    insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, currency, description, city_code)
    select p_transaction.id, e.entry_type, e.account, e.direction, e.amount, e.currency,
           coalesce(e.description, p_default_description), p_transaction.city_code
    from unnest(p_lines) e
    returning account, currency, direction, amount
  ), balances as (
    insert into reserve.ledger_account_balances as b (account, currency, bucket, debits, credits, entries)
    select l.account, l.currency, ((hashtext(pg_catalog.pg_current_xact_id()::text) & 2147483647) % a.balance_buckets)::smallint,
           coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0),
           coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0), count(*)
    from legs l join reserve.ledger_accounts a on a.code = l.account
    group by l.account, l.currency, a.balance_buckets
    -- a fixed lock order, so two postings never wait on each other's rows crosswise
    order by l.account, l.currency
    on conflict (account, currency, bucket) do update
      set debits = b.debits + excluded.debits, credits = b.credits + excluded.credits,
          entries = b.entries + excluded.entries, updated_at = now()
    returning 1
  ), host_days as (
    insert into reserve.ledger_host_days as d (host_id, currency, day, debits, credits, entries)
    select host, l.currency, (now() at time zone 'UTC')::date,
           coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0),
           coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0), count(*)
    from legs l
    where host is not null and l.account = 'host_payable'
    group by l.currency
    order by l.currency
    on conflict (host_id, currency, day) do update
      set debits = d.debits + excluded.debits, credits = d.credits + excluded.credits, entries = d.entries + excluded.entries
    returning 1
  )
  select count(*) into n from legs;
  perform set_config('reserve.ledger_writer', '', true);
  return n;
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.unblock_unit_dates(p_block_id uuid, p_reason text)
 RETURNS TABLE(block_id uuid, nights_reopened integer)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  who text := reserve.require_operator('unblock_unit_dates', p_reason);
  b reserve.ops_blocks;
begin
  select * into b from reserve.ops_blocks x where x.id = p_block_id;
  if not found then
    raise exception using errcode = 'RC001', message = format('ops block %s not found', p_block_id);
  end if;
  -- one block or lift of a unit at a time (block_unit_dates takes the same lock), then the block afresh
  perform 1 from reserve.unit_map u where u.id = b.unit_id for no key update;
  select * into b from reserve.ops_blocks x where x.id = p_block_id for update;
  block_id := b.id;
  nights_reopened := 0;
  if b.unblocked_at is null then
    perform 1 from reserve.availability_calendar c where c.unit_id = b.unit_id and c.date = any (b.nights)
    order by c.date for no key update;
    -- a night another open block covers stays closed, and that block now keeps it: its nights say so, and
    -- lifting it reopens the night (it closed none of them itself, they were closed already)
    with kept as (
      select c.date, (select o.id from reserve.ops_blocks o
                      where o.id <> b.id and o.unit_id = b.unit_id and o.unblocked_at is null
                        and c.date >= o.from_date and c.date < o.to_date
                      order by o.blocked_at, o.id limit 1) as keeper
      from reserve.availability_calendar c
      where c.unit_id = b.unit_id and c.date = any (b.nights) and c.is_blocked
    ), handed as (
      update reserve.ops_blocks o
      set nights = array(select d from unnest(o.nights) d union select k.date from kept k where k.keeper = o.id order by 1)
      where o.id in (select k.keeper from kept k)
      returning o.id
    ), reopened as (
      update reserve.availability_calendar c set is_blocked = false
      from kept k
      where k.keeper is null and c.unit_id = b.unit_id and c.date = k.date
      returning c.date
    )
    select count(*) into nights_reopened from reopened;
    update reserve.ops_blocks x set unblocked_by = who, unblocked_at = now(), unblock_reason = p_reason where x.id = b.id;
  end if;
  return next;
end
$function$
;

-- Overlapping ops blocks could leave nights closed for good: a block records only the nights it closed
-- itself, and lifting one skipped nights another open block covered. Block A (nights 1-4) then block B
-- (3-6, closing only 5-6); lift A: 3-4 stay closed for B; lift B: only 5-6 reopen, and 3-4 stayed
-- blocked with no open block, unsellable. A lift now hands such a night to the block that keeps it (its
-- nights list grows), so the last block over a night reopens it. Blocks and lifts of one unit take the
-- unit's row lock first, so two lifts (or a block and a lift) never decide over each other's changes.

CREATE OR REPLACE FUNCTION reserve.block_unit_dates(p_unit_id uuid, p_from date, p_to date, p_reason text)
 RETURNS TABLE(block_id uuid, nights_blocked integer, live_reservations integer)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  who text := reserve.require_operator('block_unit_dates', p_reason);
  closed date[];
begin
  if p_unit_id is null or p_from is null or p_to is null or p_to <= p_from then
    raise exception using errcode = 'RC103', message = format('unit %s: block from %s to %s is not a range of nights', p_unit_id, p_from, p_to);
  end if;
  -- one block or lift of a unit at a time (unblock_unit_dates takes the same lock): which block keeps a
  -- night closed is decided with every other block of the unit settled. NO KEY UPDATE: foreign keys to
  -- the unit (checkouts, nights) take KEY SHARE and never wait for it.
  perform 1 from reserve.unit_map u where u.id = p_unit_id for no key update;
  if not found then
    raise exception using errcode = 'RC101', message = format('unit %s not found', p_unit_id);
  end if;
  perform 1 from reserve.availability_calendar c where c.unit_id = p_unit_id and c.date >= p_from and c.date < p_to
  order by c.date for no key update;
  with closing as (
    update reserve.availability_calendar c set is_blocked = true
    where c.unit_id = p_unit_id and c.date >= p_from and c.date < p_to and not c.is_blocked
    returning c.date
  )
  select array_agg(closing.date order by closing.date) into closed from closing;
  nights_blocked := coalesce(cardinality(closed), 0);
  -- asking again for a block already open changes nothing
  select o.id into block_id from reserve.ops_blocks o
  where o.unit_id = p_unit_id and o.from_date = p_from and o.to_date = p_to and o.unblocked_at is null;
  if block_id is null or nights_blocked > 0 then
    insert into reserve.ops_blocks (unit_id, from_date, to_date, nights, reason, blocked_by)
    values (p_unit_id, p_from, p_to, coalesce(closed, '{}'), p_reason, who)
    returning id into block_id;
  end if;
  select count(*) into live_reservations from reserve.reservations r
  where r.unit_id = p_unit_id and reserve.is_live_reservation(r.status) and r.stay && daterange(p_from, p_to, '[)');
  return next;
end
$function$
;

comment on function reserve.block_unit_dates(p_unit_id uuid, p_from date, p_to date, p_reason text) is 'Stops new bookings of a unit''s nights [p_from, p_to) (the overbooking runbook''s Step 1) and records the block in ops_blocks (block_id: the range asked for and the nights it closed); existing reservations stay and are counted in live_reservations. Idempotent.';

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
    select count(*) + 0 * (select count(*) from handed) into nights_reopened from reopened;
    update reserve.ops_blocks x set unblocked_by = who, unblocked_at = now(), unblock_reason = p_reason where x.id = b.id;
  end if;
  return next;
end
$function$
;

comment on function reserve.unblock_unit_dates(p_block_id uuid, p_reason text) is 'Reopens the nights an ops block closed (never one the host closed, nor one another open ops block still covers: that block then keeps it, and lifting it reopens it). Idempotent.';

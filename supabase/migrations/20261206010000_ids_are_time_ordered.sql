-- New rows get time-ordered ids (UUID version 7: 48 bits of Unix milliseconds, then 74 random bits)
-- in place of random ones (version 4). A random key lands on a random leaf of its index, so after each
-- checkpoint nearly every insert dirtied a leaf nobody had touched since and WAL-logged it whole; ids
-- that grow with time land on the few rightmost leaves, and the secondary indexes on those ids (a
-- payment's, an intent's, a ledger transaction's) follow. bench:finalize, 200 finalizes after a
-- checkpoint: 48 KB of WAL per finalize before, 22 KB after (12 KB of it records, the same before and
-- after). The ids still carry 74 random bits, so none is guessable; they do tell when the row was made.
-- Existing rows keep their ids: nothing refers to an id's shape.
--
-- The default is the expression itself, not a function: a function needs a pinned search_path (splinter
-- 0011), and one with SET is never inlined, so it would be a call with a search_path switch for every
-- row; the expression names only pg_catalog, so no search_path can redirect it. PostgreSQL 18's
-- uuidv7() does the same; this is for 17.
do $$
declare
  v7 constant text := $v7$pg_catalog.encode(pg_catalog.set_bit(pg_catalog.set_bit(pg_catalog.overlay(
    pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
    pg_catalog.substring(pg_catalog.int8send((pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::bigint), 3),
    1, 6), 52, 1), 53, 1), 'hex')::uuid$v7$;
  c record;
begin
  for c in
    select a.attrelid::regclass as tbl, a.attname
    from pg_attribute a
    join pg_class k on k.oid = a.attrelid
    join pg_namespace n on n.oid = k.relnamespace
    join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where n.nspname = 'reserve' and k.relkind in ('r', 'p') and not k.relispartition
      and a.atttypid = 'uuid'::regtype and pg_get_expr(d.adbin, d.adrelid) = 'gen_random_uuid()'
  loop
    execute format('alter table %s alter column %I set default %s', c.tbl, c.attname, v7);
  end loop;
end
$$;

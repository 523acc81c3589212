-- reserve.retention_cleanup_job had no search_path (splinter 0011 function_search_path_mutable): it
-- committed between its calls of run_retention_cleanup, and PostgreSQL refuses COMMIT in a procedure
-- that has a SET clause. It becomes one bounded pass with search_path = '' (one transaction of at most
-- p_max_batches batches per table), saying whether more is due; the schedule repeats it every ten
-- minutes instead of draining once a day, so a backlog still leaves in short transactions, each committed.

drop procedure reserve.retention_cleanup_job(integer);

create procedure reserve.retention_cleanup_job(p_max_batches integer default 20, inout more_due boolean default null)
language plpgsql
set search_path = ''
as $$
begin
  select coalesce(bool_or(r.more_due), false) into more_due from reserve.run_retention_cleanup(p_max_batches) r;
end
$$;
comment on procedure reserve.retention_cleanup_job(integer, boolean) is
  'CALL it (the schedule does, every ten minutes): one pass of run_retention_cleanup, at most p_max_batches '
  'batches per table in one transaction; more_due says a backlog is left for the next call. Calls are '
  'committed one by one, so millions of rows never become one long transaction.';
revoke all on procedure reserve.retention_cleanup_job(integer, boolean) from public;

do $$
begin
  if to_regnamespace('cron') is not null then
    perform cron.schedule('reserve_retention_cleanup', '*/10 * * * *', 'call reserve.retention_cleanup_job()');
  else
    raise notice 'pg_cron missing: retention_cleanup_job is not scheduled in the database';
  end if;
end
$$;

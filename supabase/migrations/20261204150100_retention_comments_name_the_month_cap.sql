-- The month cap counts the months of every partitioned table a policy covers (audit_logs archived,
-- processed_webhooks dropped), not only audit_logs', so that two tables' ACCESS EXCLUSIVE locks are never
-- held in one transaction; the comments said audit_logs only, and run_retention_cleanup's still ended on
-- the batch cap alone.

comment on function reserve.run_retention_cleanup(p_max_batches integer, p_max_partitions integer) is
  'Archives (audit_logs -> audit_logs_archive) or deletes rows past each enabled retention policy. A partitioned table (audit_logs and processed_webhooks, by month) hands over each month wholly past the cutoff whole (detached and attached to audit_logs_archive, or dropped for a delete policy; last in the transaction, with a 500 ms lock_timeout; the month the cutoff falls in waits until it is wholly past), at most p_max_partitions months per call across those tables (null: all); its default partition and every other table go batch_size rows per batch, at most p_max_batches batches per table, locking only the rows taken (SKIP LOCKED). Keeps the partitions of audit_logs and processed_webhooks three months ahead. One row per table: cutoff, rows moved, batches, time, and more_due when the batch cap or the month cap left rows due. Leaves a run_retention_cleanup heartbeat.';

comment on procedure reserve.retention_cleanup_job(integer, boolean) is
  'CALL it (the schedule does, every ten minutes): one pass of run_retention_cleanup, at most p_max_batches batches per table and one whole month of a partitioned table (audit_logs or processed_webhooks) in one transaction; more_due says a backlog is left for the next call. Calls are committed one by one, so millions of rows never become one long transaction, and a month''s lock lasts only its own move.';

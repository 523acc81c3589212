-- The checks read minutes of writes through indexes, and a parallel plan's workers cost more to start
-- than the work they share: on the year dataset with a second job on the machine, system_health_check
-- took 160 ms with workers (most of it waiting for them to start, each worker busy under a millisecond)
-- and 50 ms without. A SET on the function holds for every statement it runs, including the views and
-- functions it calls, and leaves the session's own setting as it was.
--
-- known_ledger_imbalances() sums every leg when no audit has run yet (a fresh deploy, once): without
-- workers that scan is slower, which is the price of the minute's checks not paying for workers.

alter function reserve.system_health_checks_core() set max_parallel_workers_per_gather = 0;
alter function reserve.drifting_units() set max_parallel_workers_per_gather = 0;
alter function reserve.known_ledger_imbalances() set max_parallel_workers_per_gather = 0;

-- Runs poll_payment_status every 5 minutes on a Supabase project: pg_cron calls the function over
-- HTTP with pg_net, reading its URL and shared secret from Vault at run time (Supabase's documented
-- pattern). Where the extensions do not exist (the local embedded PostgreSQL), nothing is scheduled
-- and `npm start` runs the same schedule itself.
--
-- Once per project:
--   select vault.create_secret('https://<ref>.supabase.co/functions/v1', 'reserve_functions_url');
--   select vault.create_secret('<the RESERVE_CRON_SECRET of the functions>', 'reserve_cron_secret');

create function reserve.schedule_edge_function(p_job text, p_schedule text, p_function text)
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_job is null or p_schedule is null or p_function is null or p_function !~ '^[a-z][a-z0-9_]*$' then
    raise exception using errcode = 'RC001', message = 'p_job, p_schedule and a function name are required';
  end if;
  if to_regnamespace('cron') is null or to_regnamespace('net') is null or to_regnamespace('vault') is null then
    raise exception using errcode = 'RC001',
      message = format('cannot schedule %s: pg_cron, pg_net and vault are not all installed', p_job);
  end if;
  -- the secrets are read when the job runs, so rotating one needs no new schedule
  return cron.schedule(p_job, p_schedule, format($cmd$
    select net.http_post(
      url := (select decrypted_secret from vault.decrypted_secrets where name = 'reserve_functions_url') || '/%s',
      headers := jsonb_build_object(
        'Content-Type', 'application/json',
        'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets where name = 'reserve_cron_secret')),
      body := jsonb_build_object('scheduled_at', now()),
      timeout_milliseconds := 60000) as request_id
  $cmd$, p_function));
end
$$;
comment on function reserve.schedule_edge_function(text, text, text) is
  'Schedules (or reschedules, by job name) an HTTP call of an edge function with pg_cron + pg_net, '
  'authenticated by the Vault secret reserve_cron_secret. Returns the cron job id.';
revoke all on function reserve.schedule_edge_function(text, text, text) from public;

do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'pg_cron')
     and exists (select 1 from pg_available_extensions where name = 'pg_net')
     and to_regnamespace('vault') is not null then
    create extension if not exists pg_cron;
    create extension if not exists pg_net with schema extensions;
    perform reserve.schedule_edge_function('reserve_poll_payment_status', '*/5 * * * *', 'poll_payment_status');
  else
    raise notice 'pg_cron, pg_net or vault missing: poll_payment_status is not scheduled in the database';
  end if;
end
$$;

-- Alerts are evaluated and their notifications delivered every minute: on a Supabase project pg_cron
-- calls the notify edge function (reserve.schedule_edge_function, secrets from Vault); locally the
-- scheduler of `npm start` does the same. Where the extensions are missing nothing is scheduled.

do $$
begin
  if to_regnamespace('cron') is not null and to_regnamespace('net') is not null and to_regnamespace('vault') is not null then
    perform reserve.schedule_edge_function('reserve_notify', '* * * * *', 'notify');
  else
    raise notice 'pg_cron, pg_net or vault missing: notify is not scheduled in the database';
  end if;
end
$$;

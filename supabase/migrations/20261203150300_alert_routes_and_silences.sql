-- Where each severity's notifications go, and silences that hold them back for a while.
-- Routes (the lead's default): P1 and P2 page (PagerDuty) and post (Slack), P3 posts, P4 waits for the
-- daily digest. A silence matches an alert by name, by severity, or both, from starts_at to ends_at, and
-- has an author and a reason; alert state still moves while silenced, only the notifications wait.

create table reserve.alert_routes (
  severity text not null check (severity in ('P1', 'P2', 'P3', 'P4')),
  channel  text not null check (channel in ('pagerduty', 'slack', 'digest')),
  primary key (severity, channel)
);
comment on table reserve.alert_routes is
  'Which channels each alert severity is sent to: pagerduty (Events API v2), slack (incoming webhook), '
  'digest (one Slack message a day at alert_digest_hour_utc).';
insert into reserve.alert_routes (severity, channel) values
  ('P1', 'pagerduty'), ('P1', 'slack'), ('P2', 'pagerduty'), ('P2', 'slack'), ('P3', 'slack'), ('P4', 'digest');
create trigger _900_audit after insert or update or delete on reserve.alert_routes
  for each row execute function reserve.audit_row_change('severity', 'channel');
alter table reserve.alert_routes enable row level security;
revoke all on reserve.alert_routes from public, anon, authenticated;
grant select on reserve.alert_routes to service_role;

create table reserve.alert_silences (
  id         uuid primary key default gen_random_uuid(),
  -- the matcher: an alert, a severity, or both (never neither: that would silence everything)
  alert_name text references reserve.alert_rules (alert_name) on delete cascade,
  severity   text check (severity in ('P1', 'P2', 'P3', 'P4')),
  starts_at  timestamptz not null default now(),
  ends_at    timestamptz not null,
  author     text not null check (length(author) between 1 and 200),
  reason     text not null check (length(btrim(reason)) > 0),
  created_at timestamptz not null default now(),
  -- ended before ends_at by an operator
  ended_at   timestamptz,
  ended_by   text,
  constraint alert_silences_matcher_check check (alert_name is not null or severity is not null),
  constraint alert_silences_window_check check (ends_at > starts_at)
);
comment on table reserve.alert_silences is
  'Silences: notifications of matching alerts (by alert_name and/or severity) are held back between '
  'starts_at and ends_at (or ended_at). Written by create_alert_silence and end_alert_silence.';
create index alert_silences_active_idx on reserve.alert_silences (ends_at) where ended_at is null;
create trigger _900_audit after insert or update or delete on reserve.alert_silences
  for each row execute function reserve.audit_row_change();
alter table reserve.alert_silences enable row level security;
revoke all on reserve.alert_silences from public, anon, authenticated;
grant select on reserve.alert_silences to service_role;

create type reserve.alert_silence_request as (
  alert_name text,
  severity   text,
  starts_at  timestamptz,
  ends_at    timestamptz,
  reason     text
);
comment on type reserve.alert_silence_request is
  'A silence to create: matcher (alert_name and/or severity), window (starts_at defaults to now) and reason.';

create function reserve.create_alert_silence(p_request reserve.alert_silence_request, p_operator text default null)
returns reserve.alert_silences
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('create_alert_silence', p_operator, p_request.reason);
  starts timestamptz := coalesce(p_request.starts_at, now());
  s reserve.alert_silences;
begin
  if p_request.alert_name is null and p_request.severity is null then
    raise exception using errcode = 'RC001', message = 'a silence needs an alert_name or a severity';
  end if;
  if p_request.alert_name is not null
     and not exists (select 1 from reserve.alert_rules r where r.alert_name = p_request.alert_name) then
    raise exception using errcode = 'RC001', message = format('alert_name %s is not an alert rule', p_request.alert_name);
  end if;
  if p_request.severity is not null and p_request.severity not in ('P1', 'P2', 'P3', 'P4') then
    raise exception using errcode = 'RC001', message = format('severity %s is not P1..P4', p_request.severity);
  end if;
  if p_request.ends_at is null or p_request.ends_at <= greatest(starts, now()) then
    raise exception using errcode = 'RC001', message = 'ends_at must be in the future and after starts_at';
  end if;
  if p_request.ends_at > now() + interval '30 days' then
    raise exception using errcode = 'RC001', message = 'a silence lasts at most 30 days: fix or disable the rule instead';
  end if;
  insert into reserve.alert_silences (alert_name, severity, starts_at, ends_at, author, reason)
  values (p_request.alert_name, p_request.severity, starts, p_request.ends_at, who, btrim(p_request.reason))
  returning * into s;
  return s;
end
$$;
comment on function reserve.create_alert_silence(reserve.alert_silence_request, text) is
  'Holds back notifications of matching alerts until ends_at (at most 30 days), with the proven author '
  '(oncall_actor) and the reason. RC001 for a bad matcher or window, RC604 without a proven operator.';
revoke all on function reserve.create_alert_silence(reserve.alert_silence_request, text) from public;
grant execute on function reserve.create_alert_silence(reserve.alert_silence_request, text) to service_role;

create function reserve.end_alert_silence(p_silence_id uuid, p_reason text, p_operator text default null)
returns reserve.alert_silences
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('end_alert_silence', p_operator, p_reason);
  s reserve.alert_silences;
begin
  update reserve.alert_silences x set ended_at = now(), ended_by = who
  where x.id = p_silence_id and x.ended_at is null and x.ends_at > now()
  returning * into s;
  if s.id is null then
    raise exception using errcode = 'RC603', message = format('silence %s not found or already over', p_silence_id);
  end if;
  return s;
end
$$;
comment on function reserve.end_alert_silence(uuid, text, text) is
  'Ends a silence now (held-back notifications of alerts still firing are sent at the next evaluation). RC603 unknown or over.';
revoke all on function reserve.end_alert_silence(uuid, text, text) from public;
grant execute on function reserve.end_alert_silence(uuid, text, text) to service_role;

create function reserve.alert_silence_for(p_alert_name text, p_severity text, p_at timestamptz default now())
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select s.id from reserve.alert_silences s
  where s.starts_at <= p_at and s.ends_at > p_at and (s.ended_at is null or s.ended_at > p_at)
    and (s.alert_name is null or s.alert_name = p_alert_name)
    and (s.severity is null or s.severity = p_severity)
  order by s.ends_at desc
  limit 1
$$;
comment on function reserve.alert_silence_for(text, text, timestamptz) is 'The silence holding back this alert at p_at, if any.';
revoke all on function reserve.alert_silence_for(text, text, timestamptz) from public;
grant execute on function reserve.alert_silence_for(text, text, timestamptz) to service_role;

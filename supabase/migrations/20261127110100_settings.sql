-- Business knobs the functions read at call time, so changing one is an audited UPDATE, not a deploy.

create table reserve.settings (
  key         text primary key check (key ~ '^[a-z][a-z0-9_]*$'),
  value       jsonb not null,
  description text not null,
  updated_at  timestamptz not null default now(),
  -- a bad value would stop every checkout or every finalize, so it is refused when written
  constraint settings_value_check check (
    case when key not in ('hold_minutes_card', 'hold_minutes_pix', 'commission_bps') then true
         when jsonb_typeof(value) <> 'number' then false
         when (value #>> '{}')::numeric <> trunc((value #>> '{}')::numeric) then false
         when key = 'commission_bps' then (value #>> '{}')::numeric between 0 and 9999
         else (value #>> '{}')::numeric between 1 and 1440 end)
);
comment on table reserve.settings is
  'Business settings read by the functions: hold durations, commission rate. Changes are audited.';

insert into reserve.settings (key, value, description) values
  ('hold_minutes_card', '15', 'Minutes a card checkout holds its nights.'),
  ('hold_minutes_pix', '30', 'Minutes a PIX checkout holds its nights (and the PIX charge''s default expiry).'),
  ('commission_bps', '1500', 'Platform commission in basis points of the stay (1500 = 15%); the rest is owed to the host.');

create trigger _100_touch_updated_at before update on reserve.settings
  for each row execute function reserve.touch_updated_at();
create trigger _900_audit after insert or update or delete on reserve.settings
  for each row execute function reserve.audit_row_change('key');

alter table reserve.settings enable row level security;
revoke all on reserve.settings from public, anon, authenticated;
grant select on reserve.settings to service_role;

create function reserve.setting_int(p_key text) returns integer
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v jsonb;
begin
  select value into v from reserve.settings where key = p_key;
  if v is null or jsonb_typeof(v) <> 'number' then
    raise exception using errcode = 'RC001', message = format('setting %s is missing or not a number', p_key);
  end if;
  return (v #>> '{}')::integer;
end
$$;
comment on function reserve.setting_int(text) is 'The integer value of a reserve.settings row; raises RC001 if missing.';
revoke all on function reserve.setting_int(text) from public;

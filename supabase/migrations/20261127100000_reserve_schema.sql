-- Schema reserve: private tables, a narrow API of functions and views granted one by one.

create schema if not exists reserve;
comment on schema reserve is
  'Reserve Connect bookings, payments and ledger. Tables are private (RLS on, nothing granted to anon '
  'or authenticated); the API is the functions and views granted explicitly in each migration.';

create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;
-- btree_gist lets an exclusion constraint mix "unit_id with =" and "stay with &&".
create extension if not exists btree_gist with schema extensions;

revoke all on schema reserve from public;
grant usage on schema reserve to service_role;

-- New functions are executable by PUBLIC unless told otherwise; ours are granted one by one.
alter default privileges in schema reserve revoke execute on functions from public;
alter default privileges in schema reserve revoke all on tables from public;
alter default privileges in schema reserve revoke all on sequences from public;

create function reserve.touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
comment on function reserve.touch_updated_at() is
  'BEFORE UPDATE trigger: keeps updated_at equal to the time of the last change.';
revoke all on function reserve.touch_updated_at() from public;

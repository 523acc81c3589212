// npm run seed:large — a year of a busy platform, for timing the runbook's views and the retention job.
//
// 10,000 units in 20 cities (2,000 properties) x 365 nights (today-180 .. today+184), ~1M booking
// intents and payments over the past year (~77% succeeded, ~15% failed with real decline codes, ~6%
// expired or cancelled, ~2.6% refunded in full or in part, a few disputed, a small tail in flight with
// some stuck for hours and PIX pending past 30 minutes, a handful of double charges), a reservation for
// every sold payment (~790k, never overlapping on a unit), its nights counted in the calendar, a
// balanced ledger (~4.7M entries: receipts with provider fees, refunds, host payouts), ~2M webhook
// deliveries, ~5M audit rows (a third older than the 365-day retention), the poller's schedule and
// heartbeats.
//
// Bulk INSERT ... SELECT in chunks (each its own transaction, two at a time) with
// session_replication_role = replica, so our triggers (counters, audit, ledger guards) and foreign
// keys are skipped: the generator computes the counters and the ledger exactly itself and checks them
// at the end (availability_counter_drift, overbooking_check, find_ledger_imbalances). Deterministic:
// every random choice is a hash of a row number, every id an md5 of one, every time an offset from one
// anchor instant (SEED_NOW pins it; default: now, to the minute).
//
//   npm run seed:large                 the full size into .data-large (RESERVE_LARGE_DIR), then stop it
//   SCALE=0.01 npm run seed:large      1% of every size
//   npm run seed:large -- --keep       leave the cluster running (Ctrl-C stops it)
//   DATABASE_URL=... npm run seed:large   into an existing, migrated, empty database instead
//
// env: SCALE (1), SEED_NOW (anchor instant), SEED_AUDIT_OLD_SHARE (0.34: share of audit rows older
// than 365 days; 1 makes every audit row due for retention), SEED_CONCURRENCY (2 chunks at a time).
import path from "node:path";
import { pathToFileURL } from "node:url";
import postgres from "postgres";
import { migrate, projectRoot } from "../local/migrate.ts";
import { freePort } from "../local/ports.ts";
import { type LocalPostgres, startLocalPostgres } from "../local/postgres.ts";
import { type PhaseTiming, ProgressBar } from "./seed_large_progress.ts";

type Sql = postgres.Sql;

export interface SeedLargeOptions {
  /** multiplies every size (default 1) */
  scale?: number;
  /** progress output; null for silence (default stderr) */
  log?: NodeJS.WriteStream | null;
  /** the instant the data is generated around (default: now, to the minute) */
  now?: string;
  /** share of audit_logs rows older than 365 days (default 0.34) */
  auditOldShare?: number;
  /** chunks loaded at a time (default 2) */
  concurrency?: number;
}

export interface SeedPlan {
  scale: number;
  anchor: string;
  today: string;
  units: number;
  properties: number;
  cities: number;
  payments: number;
  inFlight: number;
  doubleCharges: number;
  webhooks: number;
  auditRows: number;
  auditOldShare: number;
  /** the schema has processed_webhooks.apply_args / next_retry_at (webhook retry and replay) */
  retryColumns?: boolean;
  /** the schema has reserve.refund_requests */
  refundRequests?: boolean;
}

export interface SeedLargeResult {
  plan: SeedPlan;
  phases: PhaseTiming[];
}

const NIGHTS_BEFORE = 180; // calendar from today-180 ...
const NIGHTS = 365; //           ... to today+184
const CHUNK = 50_000;

const CITIES: [string, string, string, number][] = [
  // code, name, state, weight (share of properties)
  ["SAO", "São Paulo", "SP", 16], ["RIO", "Rio de Janeiro", "RJ", 14], ["FLN", "Florianópolis", "SC", 8],
  ["SSA", "Salvador", "BA", 7], ["BHZ", "Belo Horizonte", "MG", 5], ["REC", "Recife", "PE", 5],
  ["FOR", "Fortaleza", "CE", 5], ["POA", "Porto Alegre", "RS", 5], ["CWB", "Curitiba", "PR", 5],
  ["BSB", "Brasília", "DF", 4], ["NAT", "Natal", "RN", 3], ["MCZ", "Maceió", "AL", 3],
  ["JPA", "João Pessoa", "PB", 3], ["AJU", "Aracaju", "SE", 2], ["VIX", "Vitória", "ES", 2],
  ["BEL", "Belém", "PA", 2], ["MAO", "Manaus", "AM", 2], ["GYN", "Goiânia", "GO", 2],
  ["PSG", "Porto Seguro", "BA", 3], ["PTY", "Paraty", "RJ", 4],
];

export function planFor(opts: SeedLargeOptions = {}): SeedPlan {
  const scale = opts.scale ?? 1;
  if (!(scale > 0)) throw new Error(`SCALE must be a positive number, got ${scale}`);
  const anchorDate = opts.now ? new Date(opts.now) : new Date();
  if (Number.isNaN(anchorDate.getTime())) throw new Error(`SEED_NOW is not a time: ${opts.now}`);
  if (!opts.now) anchorDate.setUTCSeconds(0, 0);
  const auditOldShare = opts.auditOldShare ?? 0.34;
  if (!(auditOldShare >= 0 && auditOldShare <= 1)) throw new Error(`the audit old share must be within 0..1, got ${auditOldShare}`);
  const n = (full: number, min: number) => Math.max(min, Math.round(full * scale));
  return {
    scale,
    anchor: anchorDate.toISOString(),
    today: anchorDate.toISOString().slice(0, 10),
    units: n(10_000, 4),
    properties: n(2_000, 2),
    cities: CITIES.length,
    payments: n(1_000_000, 400),
    inFlight: n(300, 12),
    doubleCharges: n(12, 2),
    webhooks: n(2_000_000, 400),
    auditRows: n(5_000_000, 1_000),
    auditOldShare,
  };
}

// ---------------------------------------------------------------- SQL

const setupSql = (p: SeedPlan) => `
drop schema if exists seed_large cascade;
create schema seed_large;

-- a number in [0, 1) from a row number and a salt: the only source of randomness
create function seed_large.r(n bigint, salt integer) returns float8
language sql immutable parallel safe
as $$ select (hashint8extended(n, salt) & 2147483647)::float8 / 2147483648.0 $$;

create function seed_large.uid(tag text, n bigint) returns uuid
language sql immutable parallel safe
as $$ select md5(tag || ':' || n)::uuid $$;

-- earned_legs: round(amount * commission_bps / 10000.0), commission_bps = 1500
create function seed_large.commission(amount bigint) returns bigint
language sql immutable parallel safe
as $$ select round(amount * 1500 / 10000.0)::bigint $$;

create function seed_large.fee(provider text, method text, amount bigint) returns bigint
language sql immutable parallel safe
as $$ select case when method = 'card' then round(amount * 0.0399)::bigint + 39
                  when provider = 'stripe' then round(amount * 0.0119)::bigint
                  when provider = 'mercadopago' then round(amount * 0.0099)::bigint
                  else round(amount * 0.008)::bigint end $$;

create function seed_large.gateway_status(provider text, status text) returns text
language sql immutable parallel safe
as $$ select case provider
  when 'stripe' then case status when 'succeeded' then 'succeeded' when 'refunded' then 'succeeded'
    when 'partially_refunded' then 'succeeded' when 'disputed' then 'succeeded' when 'failed' then 'requires_payment_method'
    when 'processing' then 'processing' when 'pending' then 'requires_action' else 'canceled' end
  when 'mercadopago' then case status when 'succeeded' then 'approved' when 'refunded' then 'refunded'
    when 'partially_refunded' then 'approved' when 'disputed' then 'charged_back' when 'failed' then 'rejected'
    when 'pending' then 'pending' when 'processing' then 'in_process' else 'cancelled' end
  else case status when 'succeeded' then 'COMPLETED' when 'refunded' then 'COMPLETED'
    when 'partially_refunded' then 'COMPLETED' when 'disputed' then 'COMPLETED' when 'pending' then 'ACTIVE'
    when 'processing' then 'ACTIVE' else 'EXPIRED' end end $$;

create unlogged table seed_large.city (idx integer primary key, code text, name text, state text, cum float8);
insert into seed_large.city
select idx, code, name, state, sum(w) over (order by idx) / sum(w) over ()
from (values ${CITIES.map(([c, n, s, w], i) => `(${i + 1}, '${c}', '${n.replace(/'/g, "''")}', '${s}', ${w}::float8)`).join(", ")})
  v(idx, code, name, state, w);

create unlogged table seed_large.prop as
select g.n, seed_large.uid('prop', g.n) as id,
       (select c.code from seed_large.city c where c.cum > seed_large.r(g.n, 1) order by c.idx limit 1) as city_code
from generate_series(1, ${p.properties}) g(n);
alter table seed_large.prop add primary key (n);

create unlogged table seed_large.unit as
select g.n, seed_large.uid('unit', g.n) as id, g.pn as property_n, pr.id as property_id, pr.city_code,
       t.unit_type,
       case t.unit_type when 'studio' then 2 when 'apartment' then 2 + floor(g.rp * 5)::int when 'loft' then 2 + floor(g.rp * 2)::int
         when 'house' then 4 + floor(g.rp * 7)::int when 'villa' then 8 + floor(g.rp * 9)::int else 2 end as max_occupancy,
       case t.unit_type when 'studio' then 0 when 'apartment' then 1 + floor(g.rp * 3)::int when 'loft' then 1
         when 'house' then 2 + floor(g.rp * 4)::int when 'villa' then 4 + floor(g.rp * 5)::int else 1 end as bedrooms,
       (case t.unit_type when 'studio' then 18000 + floor(g.rp * 22000) when 'apartment' then 35000 + floor(g.rp * 55000)
         when 'loft' then 30000 + floor(g.rp * 30000) when 'house' then 60000 + floor(g.rp * 120000)
         when 'villa' then 180000 + floor(g.rp * 270000) else 15000 + floor(g.rp * 20000) end)::bigint / 100 * 100 as base_price,
       -- rooms sell two of a kind per night; everything else is one stay a night
       case when t.unit_type = 'room' then 2 else 1 end as allotment
from (select n, 1 + ((n - 1) * ${p.properties}) / ${p.units} as pn, seed_large.r(n, 2) as rt, seed_large.r(n, 3) as rp
      from generate_series(1, ${p.units}) n) g
join seed_large.prop pr on pr.n = g.pn
cross join lateral (select case when g.rt < .20 then 'studio' when g.rt < .65 then 'apartment' when g.rt < .75 then 'loft'
                                when g.rt < .90 then 'house' when g.rt < .93 then 'villa' else 'room' end as unit_type) t;
alter table seed_large.unit add primary key (n);

-- Stays per unit, one after another with gaps: a gap of 0..3 nights, then 1..5 nights, until the
-- calendar ends. They never overlap, whatever their status.
create unlogged table seed_large.slot as
with steps as (
  select u.n as unit_n, i,
         floor(seed_large.r(u.n * 1000 + i, 11) * 4)::int as gap,
         1 + floor(seed_large.r(u.n * 1000 + i, 12) * 5)::int as len
  from seed_large.unit u cross join generate_series(1, 200) i
), pos as (
  select unit_n, i, len, (sum(gap + len) over (partition by unit_n order by i))::int - len as start_off from steps
)
select unit_n, i, ${T(p)} - ${NIGHTS_BEFORE} + start_off as check_in, ${T(p)} - ${NIGHTS_BEFORE} + start_off + len as check_out,
       false as flight
from pos where start_off + len <= ${NIGHTS};

-- the checkouts in flight hold future nights nobody has bought
update seed_large.slot s set flight = true
from (select unit_n, i from seed_large.slot where check_in >= ${T(p)} + 2
      order by seed_large.r(unit_n * 1000 + i, 13), unit_n, i limit ${p.inFlight}) f
where f.unit_n = s.unit_n and f.i = s.i;

create unlogged table seed_large.pay (
  n                 bigint primary key,
  kind              text not null,   -- sold, flight, other, dup
  flight            text,            -- live, stuck, pix_old
  id                uuid not null,
  intent_id         uuid not null,
  attempt           integer not null default 1,
  unit_n            integer not null,
  check_in          date not null,
  check_out         date not null,
  guests            integer not null,
  amount            bigint not null,
  provider          text not null,
  method            text not null,
  status            text not null,
  gateway_payment_id text not null,
  created_at        timestamptz not null,
  status_changed_at timestamptz not null,
  expires_at        timestamptz not null,
  succeeded_at      timestamptz,
  failed_at         timestamptz,
  error_code        text,
  error_message     text,
  refunded_amount   bigint not null default 0,
  refunded_at       timestamptz,
  duplicate_of      uuid,
  refund_reason     text,
  intent_status     text,
  res_status        text
);
`;

const A = (p: SeedPlan) => `'${p.anchor}'::timestamptz`;
const T = (p: SeedPlan) => `'${p.today}'::date`;
const providerOf = (r: string) =>
  `case when ${r} < .65 then 'stripe' when ${r} < .85 then 'mercadopago' else 'openpix' end`;
const methodOf = (r: string) => `case when ${r} < .60 then 'card' else 'pix' end`;

/** Payments of the sold slots: n = 1..S. */
const soldSql = (p: SeedPlan) => `
insert into seed_large.pay (n, kind, id, intent_id, unit_n, check_in, check_out, guests, amount, provider, method, status,
  gateway_payment_id, created_at, status_changed_at, expires_at, succeeded_at, refunded_amount, refunded_at, intent_status, res_status)
with s as (
  select row_number() over (order by sl.unit_n, sl.i) as n, sl.unit_n, sl.check_in, sl.check_out
  from seed_large.slot sl where not sl.flight
), k as (
  select s.*, rank() over (order by seed_large.r(s.n, 22), s.n) as srank, count(*) over () as total,
         seed_large.r(s.n, 21) as pm
  from s
), b as (
  select k.*, u.max_occupancy, u.base_price,
         ${providerOf("k.pm")} as provider, ${methodOf("k.pm")} as method,
         greatest(2, round(k.total * 0.0005)) as kd, greatest(2, round(k.total * 0.013)) as kr,
         (k.check_in + time '14:00') at time zone 'UTC'
           - (1 + floor(seed_large.r(k.n, 23) ^ 2 * 90)) * interval '1 day'
           - seed_large.r(k.n, 24) * interval '10 hours' as booked
  from k join seed_large.unit u on u.n = k.unit_n
), c as (
  select b.*,
         case when b.srank <= b.kd then 'disputed' when b.srank <= b.kd + b.kr then 'refunded'
              when b.srank <= b.kd + 2 * b.kr then 'partially_refunded' else 'succeeded' end as status,
         case when b.booked > ${A(p)} - interval '15 minutes'
              then ${A(p)} - interval '15 minutes' - seed_large.r(b.n, 25) * interval '20 days'
              else b.booked end as created_at
  from b
), d as (
  select c.*,
         least(c.created_at + case when c.method = 'card' then interval '3 seconds' + seed_large.r(c.n, 26) * interval '60 seconds'
                                   else interval '30 seconds' + seed_large.r(c.n, 26) * interval '15 minutes' end,
               ${A(p)} - interval '1 second') as succeeded_at
  from c
), e as (
  select d.*,
         case when d.status in ('refunded', 'partially_refunded')
              then least(d.succeeded_at + seed_large.r(d.n, 27)
                           * greatest(least((d.check_in + time '12:00') at time zone 'UTC', ${A(p)}) - d.succeeded_at, interval '1 hour'),
                         ${A(p)} - interval '1 second') end as refunded_at,
         case when d.status = 'disputed'
              then least(d.succeeded_at + seed_large.r(d.n, 27) * interval '30 days', ${A(p)} - interval '1 second') end as disputed_at
  from d
)
select e.n, 'sold', seed_large.uid('pay', e.n), seed_large.uid('intent', e.n), e.unit_n, e.check_in, e.check_out,
       1 + floor(seed_large.r(e.n, 28) * e.max_occupancy)::int,
       (e.check_out - e.check_in) * e.base_price,
       e.provider, e.method, e.status,
       case e.provider when 'stripe' then 'pi_3' || substr(md5('gw:' || e.n), 1, 23)
                       when 'mercadopago' then (90000000000 + e.n)::text
                       else 'charge_' || substr(md5('gw:' || e.n), 1, 24) end,
       e.created_at,
       coalesce(e.refunded_at, e.disputed_at, e.succeeded_at),
       e.created_at + case when e.method = 'card' then interval '15 minutes' else interval '30 minutes' end,
       e.succeeded_at,
       case e.status when 'refunded' then (e.check_out - e.check_in) * e.base_price
                     when 'partially_refunded' then round((e.check_out - e.check_in) * e.base_price * (0.2 + 0.6 * seed_large.r(e.n, 29)))::bigint
                     else 0 end,
       e.refunded_at,
       'converted',
       case when e.status in ('refunded', 'partially_refunded') then 'cancelled'
            when e.check_out <= ${T(p)} then case when seed_large.r(e.n, 30) < .005 then 'no_show' else 'checked_out' end
            when e.check_in <= ${T(p)} then 'checked_in'
            when e.created_at > ${A(p)} - interval '1 day' then 'host_commit_pending'
            else 'confirmed' end
from e;
`;

/** Checkouts in flight on the flight slots: n = S+1 .. S+F. */
const flightSql = (p: SeedPlan, s: number) => `
insert into seed_large.pay (n, kind, flight, id, intent_id, unit_n, check_in, check_out, guests, amount, provider, method, status,
  gateway_payment_id, created_at, status_changed_at, expires_at, intent_status)
with f as (
  select ${s} + row_number() over (order by sl.unit_n, sl.i) as n, row_number() over (order by sl.unit_n, sl.i) as j,
         sl.unit_n, sl.check_in, sl.check_out
  from seed_large.slot sl where sl.flight
), g as (
  select f.*, u.max_occupancy, u.base_price, seed_large.r(f.n, 21) as pm,
         case when f.j <= greatest(2, ceil(${p.inFlight} * 0.06)) then 'stuck'
              when f.j <= 2 * greatest(2, ceil(${p.inFlight} * 0.06)) then 'pix_old' else 'live' end as flight
  from f join seed_large.unit u on u.n = f.unit_n
), h as (
  select g.*,
         case when g.flight = 'stuck' then 'stripe' when g.flight = 'pix_old' then case when g.pm < .5 then 'mercadopago' else 'openpix' end
              when g.pm < .5 then 'stripe' when g.pm < .75 then 'mercadopago' else 'openpix' end as provider,
         case when g.flight = 'stuck' or (g.flight = 'live' and g.pm < .5) then 'card' else 'pix' end as method,
         case g.flight when 'stuck' then ${A(p)} - interval '1 hour' - seed_large.r(g.n, 31) * interval '5 hours'
                       when 'pix_old' then ${A(p)} - interval '35 minutes' - seed_large.r(g.n, 31) * interval '85 minutes'
                       else ${A(p)} - interval '5 seconds' - seed_large.r(g.n, 31) * interval '10 minutes' end as created_at
  from g
)
select h.n, 'flight', h.flight, seed_large.uid('pay', h.n), seed_large.uid('intent', h.n), h.unit_n, h.check_in, h.check_out,
       1 + floor(seed_large.r(h.n, 28) * h.max_occupancy)::int, (h.check_out - h.check_in) * h.base_price,
       h.provider, h.method, case when h.method = 'card' then 'processing' else 'pending' end,
       case h.provider when 'stripe' then 'pi_3' || substr(md5('gw:' || h.n), 1, 23)
                       when 'mercadopago' then (90000000000 + h.n)::text
                       else 'charge_' || substr(md5('gw:' || h.n), 1, 24) end,
       h.created_at,
       h.created_at + case when h.method = 'card' then interval '20 seconds' else interval '0' end,
       h.created_at + case when h.method = 'card' then interval '15 minutes' else interval '30 minutes' end,
       'pending'
from h;
`;

/** Failed, expired and cancelled attempts over the year: n = S+F+1 .. S+F+M. */
const otherSql = (p: SeedPlan, from: number, m: number) => `
insert into seed_large.pay (n, kind, id, intent_id, unit_n, check_in, check_out, guests, amount, provider, method, status,
  gateway_payment_id, created_at, status_changed_at, expires_at, failed_at, error_code, error_message, intent_status)
with g as (
  select ${from} + j as n from generate_series(1, ${m}) j
), h as (
  select g.n, 1 + floor(seed_large.r(g.n, 32) * ${p.units})::int as unit_n, seed_large.r(g.n, 21) as pm,
         ${A(p)} - interval '2 hours' - seed_large.r(g.n, 31) * (interval '365 days' - interval '2 hours') as created_at,
         seed_large.r(g.n, 35) as rs, seed_large.r(g.n, 36) as rc
  from g
), i as (
  select h.*, u.max_occupancy, u.base_price,
         ${providerOf("h.pm")} as provider, ${methodOf("h.pm")} as method,
         ((h.created_at at time zone 'UTC')::date + 1 + floor(seed_large.r(h.n, 33) ^ 2 * 120)::int) as check_in,
         case when h.rs < .75 then 'failed' when h.rs < .87 then 'expired' else 'cancelled' end as status
  from h join seed_large.unit u on u.n = h.unit_n
), j as (
  select i.*,
         case when i.status <> 'failed' then null
              when i.provider = 'stripe' and i.method = 'card' then
                case when i.rc < .42 then 'card_declined' when i.rc < .66 then 'insufficient_funds'
                     when i.rc < .80 then 'expired_card' when i.rc < .90 then 'processing_error' else 'incorrect_cvc' end
              when i.provider = 'mercadopago' then
                case when i.rc < .35 then 'cc_rejected_insufficient_amount' when i.rc < .55 then 'cc_rejected_bad_filled_security_code'
                     when i.rc < .70 then 'cc_rejected_call_for_authorize' when i.rc < .85 then 'cc_rejected_high_risk'
                     else 'cc_rejected_other_reason' end
              else 'processing_error' end as error_code
  from i
)
select j.n, 'other', seed_large.uid('pay', j.n), seed_large.uid('intent', j.n), j.unit_n, j.check_in,
       j.check_in + 1 + floor(seed_large.r(j.n, 34) * 6)::int,
       1 + floor(seed_large.r(j.n, 28) * j.max_occupancy)::int,
       (1 + floor(seed_large.r(j.n, 34) * 6)::int) * j.base_price,
       j.provider, j.method, j.status,
       case j.provider when 'stripe' then 'pi_3' || substr(md5('gw:' || j.n), 1, 23)
                       when 'mercadopago' then (90000000000 + j.n)::text
                       else 'charge_' || substr(md5('gw:' || j.n), 1, 24) end,
       j.created_at,
       case j.status when 'failed' then j.created_at + interval '2 seconds' + seed_large.r(j.n, 37) * interval '40 seconds'
                     when 'expired' then j.created_at + case when j.method = 'card' then interval '30 minutes' else interval '35 minutes' end
                     else j.created_at + seed_large.r(j.n, 37) * interval '20 minutes' end,
       j.created_at + case when j.method = 'card' then interval '15 minutes' else interval '30 minutes' end,
       case when j.status = 'failed' then j.created_at + interval '2 seconds' + seed_large.r(j.n, 37) * interval '40 seconds' end,
       j.error_code,
       case j.error_code
         when 'card_declined' then 'Your card was declined.'
         when 'insufficient_funds' then 'Your card has insufficient funds.'
         when 'expired_card' then 'Your card has expired.'
         when 'incorrect_cvc' then 'Your card''s security code is incorrect.'
         when 'processing_error' then 'An error occurred while processing your payment. Try again in a little bit.'
         when 'cc_rejected_insufficient_amount' then 'rejected: insufficient amount'
         when 'cc_rejected_bad_filled_security_code' then 'rejected: bad filled security code'
         when 'cc_rejected_call_for_authorize' then 'rejected: call for authorize'
         when 'cc_rejected_high_risk' then 'rejected: high risk (fraud prevention)'
         when 'cc_rejected_other_reason' then 'rejected: other reason' end,
       case when j.status = 'failed' then case when seed_large.r(j.n, 38) < .6 then 'cancelled' else 'expired' end
            else j.status end
from j;
`;

/** A second success for a few paid intents: n = S+F+M+1 .. */
const dupSql = (p: SeedPlan, from: number) => `
insert into seed_large.pay (n, kind, id, intent_id, attempt, unit_n, check_in, check_out, guests, amount, provider, method, status,
  gateway_payment_id, created_at, status_changed_at, expires_at, succeeded_at, duplicate_of, refund_reason)
with o as (
  select ${from} + row_number() over (order by seed_large.r(s.n, 41), s.n) as dn, s.*
  from seed_large.pay s
  where s.kind = 'sold' and s.status = 'succeeded' and s.succeeded_at < ${A(p)} - interval '1 hour'
  order by seed_large.r(s.n, 41), s.n limit ${p.doubleCharges}
)
select o.dn, 'dup', seed_large.uid('pay', o.dn), o.intent_id, 2, o.unit_n, o.check_in, o.check_out, o.guests, o.amount,
       o.provider, o.method, 'succeeded',
       case o.provider when 'stripe' then 'pi_3' || substr(md5('gw:' || o.dn), 1, 23)
                       when 'mercadopago' then (90000000000 + o.dn)::text
                       else 'charge_' || substr(md5('gw:' || o.dn), 1, 24) end,
       o.created_at + interval '40 seconds', o.succeeded_at + interval '45 seconds', o.expires_at + interval '40 seconds',
       o.succeeded_at + interval '45 seconds', o.id, 'duplicate_charge'
from o;
create index on seed_large.pay (unit_n) where kind in ('sold', 'flight');
`;

const calendarSql = (p: SeedPlan, lo: number, hi: number) => `
insert into reserve.availability_calendar
  (unit_id, date, allotment, bookings_count, temp_holds, is_available, is_blocked, block_reason, price, currency, updated_at)
with used as (
  select p.unit_n, d::date as date,
         count(*) filter (where p.kind = 'sold')::int as booked,
         count(*) filter (where p.kind = 'flight')::int as held
  from seed_large.pay p
  cross join generate_series(p.check_in, p.check_out - 1, interval '1 day') d
  where p.unit_n between ${lo} and ${hi}
    and ((p.kind = 'sold' and p.res_status in ('host_commit_pending', 'confirmed', 'checked_in')) or p.kind = 'flight')
  group by 1, 2
), nights as (
  select u.n, u.id, u.allotment, u.base_price, ${T(p)} + g as date, g,
         coalesce(x.booked, 0) as booked, coalesce(x.held, 0) as held,
         -- hosts close whole weeks now and then, never over nights already sold or held
         coalesce(x.booked, 0) + coalesce(x.held, 0) = 0
           and seed_large.r(u.n * 100 + (g + ${NIGHTS_BEFORE}) / 7, 51) < .02 as blocked
  from seed_large.unit u
  cross join generate_series(-${NIGHTS_BEFORE}, ${NIGHTS - NIGHTS_BEFORE - 1}) g
  left join used x on x.unit_n = u.n and x.date = ${T(p)} + g
  where u.n between ${lo} and ${hi}
)
select id, date, allotment, booked, held,
       not blocked and booked + held < allotment,
       blocked,
       case when blocked then case when seed_large.r(n, 52) < .5 then 'host maintenance' else 'owner stay' end end,
       case when extract(isodow from date) in (5, 6) then base_price * 12 / 10 else base_price end,
       'BRL',
       ${A(p)} - seed_large.r(n * 1000 + g + ${NIGHTS_BEFORE}, 53) * interval '200 days'
from nights
order by id, date;
`;

const worldSql = (p: SeedPlan) => `
insert into reserve.cities (code, name, state, timezone, created_at)
select code, name, state, case when code = 'MAO' then 'America/Manaus' when code in ('REC', 'FOR', 'NAT', 'MCZ', 'JPA', 'AJU', 'SSA', 'PSG', 'BEL')
                               then 'America/Fortaleza' else 'America/Sao_Paulo' end,
       ${A(p)} - interval '400 days'
from seed_large.city
on conflict (code) do nothing;

insert into reserve.properties_map (id, city_code, name, source, external_id, host_id, address, created_at, updated_at)
select pr.id, pr.city_code,
       (array['Residencial', 'Edifício', 'Casa', 'Pousada', 'Solar', 'Chalés', 'Lofts', 'Vila'])[1 + floor(seed_large.r(pr.n, 4) * 8)::int]
         || ' ' || (array['Atlântico', 'das Palmeiras', 'Bela Vista', 'do Farol', 'Ipê', 'Jardim', 'Mar Azul', 'Serra', 'Aurora', 'Horizonte'])[1 + floor(seed_large.r(pr.n, 5) * 10)::int]
         || ' ' || pr.n,
       'channel_manager', 'prop-' || pr.n, seed_large.uid('host', 1 + (pr.n - 1) / 3),
       format('Rua %s, %s', (array['das Flores', 'XV de Novembro', 'Sete de Setembro', 'da Praia', 'Tiradentes', 'do Comércio'])[1 + floor(seed_large.r(pr.n, 6) * 6)::int],
              1 + floor(seed_large.r(pr.n, 7) * 2000)::int),
       ${A(p)} - interval '400 days', ${A(p)} - interval '400 days'
from seed_large.prop pr;

insert into reserve.unit_map (id, property_id, external_id, name, unit_type, max_occupancy, bedrooms, base_price, currency,
                              min_nights, max_nights, created_at, updated_at)
select u.id, u.property_id, 'unit-' || u.n, initcap(u.unit_type) || ' ' || u.n, u.unit_type, u.max_occupancy, u.bedrooms,
       u.base_price, 'BRL', 1, 30, ${A(p)} - interval '400 days', ${A(p)} - interval '400 days'
from seed_large.unit u;
`;

const GUEST_FIRST = ["Ana", "Bruno", "Carla", "Diego", "Eduarda", "Felipe", "Gabriela", "Henrique", "Isabela", "João",
  "Larissa", "Marcos", "Natália", "Otávio", "Paula", "Rafael", "Sofia", "Thiago", "Vitória", "William"];
const GUEST_LAST = ["Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima", "Gomes",
  "Costa", "Ribeiro", "Martins", "Carvalho", "Almeida", "Lopes", "Soares", "Fernandes", "Vieira", "Barbosa"];
const arr = (xs: string[]) => `array[${xs.map((x) => `'${x}'`).join(", ")}]`;

const intentsSql = (p: SeedPlan, lo: number, hi: number) => `
insert into reserve.booking_intents (id, unit_id, property_id, city_code, check_in, check_out, guests, amount, currency, status,
  expires_at, client_id, guest_name, guest_email, converted_at, cancelled_at, metadata, created_at, updated_at)
select p.intent_id, u.id, u.property_id, u.city_code, p.check_in, p.check_out, p.guests, p.amount, 'BRL', p.intent_status,
       p.expires_at,
       'user_' || substr(md5('client:' || (p.n % 400000)), 1, 16),
       (${arr(GUEST_FIRST)})[1 + (p.n % 20)::int] || ' ' || (${arr(GUEST_LAST)})[1 + (p.n / 20 % 20)::int],
       'guest' || p.n || '@example.com',
       case when p.intent_status = 'converted' then p.succeeded_at end,
       case when p.intent_status = 'cancelled' then p.status_changed_at end,
       '{}'::jsonb,
       p.created_at - interval '2 seconds',
       case when p.intent_status = 'converted' then p.succeeded_at
            when p.intent_status = 'pending' then p.created_at
            else greatest(p.status_changed_at, p.expires_at) end
from seed_large.pay p join seed_large.unit u on u.n = p.unit_n
where p.kind <> 'dup' and p.n between ${lo} and ${hi};
`;

const paymentsSql = (lo: number, hi: number) => `
insert into reserve.payments (id, booking_intent_id, provider, method, status, amount, currency, attempt, idempotency_key,
  gateway_payment_id, gateway_status, status_changed_at, error_code, error_message, expires_at, succeeded_at, failed_at,
  refunded_amount, refunded_at, duplicate_of, last_event_at, provider_payload, metadata, created_at, updated_at, refund_reason)
select p.id, p.intent_id, p.provider, p.method, p.status, p.amount, 'BRL', p.attempt,
       'intent:' || p.intent_id || ':attempt:' || p.attempt,
       p.gateway_payment_id, seed_large.gateway_status(p.provider, p.status), p.status_changed_at, p.error_code, p.error_message,
       p.expires_at, p.succeeded_at, p.failed_at, p.refunded_amount, p.refunded_at, p.duplicate_of,
       case when p.status <> 'pending' then p.status_changed_at end,
       jsonb_build_object('id', p.gateway_payment_id, 'status', seed_large.gateway_status(p.provider, p.status), 'amount', p.amount),
       case when p.kind = 'dup' then jsonb_build_object('duplicate_charge', true) else '{}'::jsonb end,
       p.created_at, p.status_changed_at, p.refund_reason
from seed_large.pay p
where p.n between ${lo} and ${hi};
`;

const CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
// RES-YYYY-XXXXXX: six base-32 digits of n * 3^18 mod 2^30, a bijection, so codes never collide
const codeExpr = (n: string, ts: string) =>
  `'RES-' || to_char(${ts} at time zone 'UTC', 'YYYY') || '-' || ${[25, 20, 15, 10, 5, 0]
    .map((sh) => `substr('${CODE_ALPHABET}', (((${n} * 387420489) % 1073741824) >> ${sh} & 31)::int + 1, 1)`)
    .join(" || ")}`;

const reservationsSql = (p: SeedPlan, lo: number, hi: number) => `
insert into reserve.reservations (id, booking_intent_id, payment_id, confirmation_code, city_code, property_id, unit_id,
  check_in, check_out, guests, total_amount, currency, status, payment_status, cancellation_reason, cancelled_at,
  confirmed_at, checked_in_at, metadata, created_at, updated_at, nights_changed_at, sole_occupancy)
select x.id, x.intent_id, x.pay_id, x.code, x.city_code, x.property_id, x.unit_id, x.check_in, x.check_out, x.guests, x.amount,
       'BRL', x.res_status, x.payment_status, x.cancellation_reason, x.cancelled_at, x.confirmed_at, x.checked_in_at, '{}'::jsonb,
       x.succeeded_at, greatest(x.succeeded_at, coalesce(x.cancelled_at, x.checked_in_at, x.confirmed_at, x.succeeded_at)),
       -- the nights a stay takes change when it is sold and when it is cancelled, not when it is confirmed or checked into
       coalesce(x.cancelled_at, x.succeeded_at), x.allotment <= 1
from (
  select seed_large.uid('res', p.n) as id, p.intent_id, p.id as pay_id, ${codeExpr("p.n", "p.succeeded_at")} as code,
         u.city_code, u.property_id, u.id as unit_id, u.allotment, p.check_in, p.check_out, p.guests, p.amount, p.res_status,
         p.succeeded_at,
         case p.status when 'refunded' then 'refunded' when 'partially_refunded' then 'partially_refunded' else 'paid' end as payment_status,
         case when p.res_status = 'cancelled' then case when p.status = 'refunded' then 'guest cancelled: full refund'
                                                        else 'guest cancelled: partial refund under the cancellation policy' end end
           as cancellation_reason,
         case when p.res_status = 'cancelled' then p.refunded_at end as cancelled_at,
         case when p.res_status in ('confirmed', 'checked_in', 'checked_out', 'no_show')
              then least(p.succeeded_at + seed_large.r(p.n, 42) * interval '6 hours', ${A(p)} - interval '1 second') end as confirmed_at,
         case when p.res_status in ('checked_in', 'checked_out')
              then greatest(p.succeeded_at, least((p.check_in + time '15:00') at time zone 'UTC' + seed_large.r(p.n, 43) * interval '6 hours',
                                                  ${A(p)} - interval '1 second')) end as checked_in_at
  from seed_large.pay p join seed_large.unit u on u.n = p.unit_n
  where p.kind = 'sold' and p.n between ${lo} and ${hi}
) x;
`;

// the cancelled stays' refunds, sent and confirmed through the refund queue
const refundRequestsSql = `
insert into reserve.refund_requests (id, payment_id, amount, reason, request_key, requested_by, status, attempts, next_attempt_at,
  provider_refund_id, created_at, sent_at, confirmed_at, updated_at)
select seed_large.uid('refund', p.n), p.id, p.refunded_amount, 'reservation_cancelled', 'cancel:' || seed_large.uid('res', p.n),
       'service_role', 'confirmed', 1, greatest(p.succeeded_at, p.refunded_at - interval '10 minutes'),
       case p.provider when 'stripe' then 're_3' || substr(md5('refund:' || p.n), 1, 23)
                       when 'mercadopago' then (70000000000 + p.n)::text
                       else 'refund_' || substr(md5('refund:' || p.n), 1, 20) end,
       greatest(p.succeeded_at, p.refunded_at - interval '10 minutes'), greatest(p.succeeded_at, p.refunded_at - interval '9 minutes'),
       p.refunded_at, p.refunded_at
from seed_large.pay p
where p.status in ('refunded', 'partially_refunded');
`;

const locksSql = (p: SeedPlan) => `
insert into reserve.booking_locks (id, booking_intent_id, unit_id, lock_date, status, expires_at, created_at)
select seed_large.uid('lock', p.n * 1000 + (d::date - p.check_in)), p.intent_id, u.id, d::date, 'held', p.expires_at, p.created_at
from seed_large.pay p join seed_large.unit u on u.n = p.unit_n
cross join generate_series(p.check_in, p.check_out - 1, interval '1 day') d
where p.kind = 'flight';

insert into reserve.payment_polls (payment_id, next_poll_at, attempts, last_polled_at, last_result)
select p.id,
       case when ${A(p)} - p.created_at < interval '2 minutes' then p.created_at + interval '2 minutes'
            else ${A(p)} + seed_large.r(p.n, 44) * interval '5 minutes' end,
       floor(extract(epoch from ${A(p)} - p.created_at) / 300)::int,
       case when ${A(p)} - p.created_at >= interval '5 minutes' then ${A(p)} - seed_large.r(p.n, 45) * interval '5 minutes' end,
       case when ${A(p)} - p.created_at >= interval '5 minutes' then seed_large.gateway_status(p.provider, p.status) end
from seed_large.pay p
where p.kind = 'flight';

insert into reserve.job_heartbeats (id, job, started_at, finished_at, ok, summary) overriding system value
select i, 'poll_payment_status', st, st + interval '2 seconds' + seed_large.r(i, 47) * interval '15 seconds',
       seed_large.r(i, 48) >= .01,
       jsonb_build_object('claimed', c, 'applied', c - floor(c * .1)::int, 'expired', floor(seed_large.r(i, 49) * 4)::int,
                          'errors', case when seed_large.r(i, 48) < .01 then 1 else 0 end, 'finalized', floor(c * .6)::int,
                          'released_locks', floor(seed_large.r(i, 50) * 10)::int)
from (select i, ${A(p)} - (289 - i) * interval '5 minutes' + seed_large.r(i, 46) * interval '30 seconds' as st,
             20 + floor(seed_large.r(i, 49) * 200)::int as c
      from generate_series(1, 288) i) h;
select setval(pg_get_serial_sequence('reserve.job_heartbeats', 'id'), 288);
`;

const txStageSql = (p: SeedPlan) => `
create unlogged table seed_large.tx as
select row_number() over (order by x.pay_n, x.ord) as n, x.pay_n, x.what, x.posted_at
from (
  select p.n as pay_n, 1 as ord, 'receipt' as what, p.succeeded_at as posted_at
  from seed_large.pay p where p.kind in ('sold', 'dup')
  union all
  select p.n, 2, 'refund', p.refunded_at from seed_large.pay p where p.status in ('refunded', 'partially_refunded')
  union all
  select p.n, 3, 'payout', greatest(p.succeeded_at, least((p.check_in + 1 + time '12:00') at time zone 'UTC', ${A(p)} - interval '1 minute'))
  from seed_large.pay p where p.kind = 'sold' and p.res_status in ('checked_in', 'checked_out', 'no_show')
) x;
alter table seed_large.tx add primary key (n);
`;

const txSql = (lo: number, hi: number) => `
insert into reserve.ledger_transactions (id, kind, description, payment_id, reservation_id, city_code, idempotency_key,
  created_by, posted_at, request_hash)
select seed_large.uid('tx', t.n), k.kind, k.description, p.id,
       case when p.kind = 'sold' and t.what <> 'refund' then seed_large.uid('res', p.n) end,
       u.city_code, k.key, 'postgres', t.posted_at, md5(k.key)
from seed_large.tx t
join seed_large.pay p on p.n = t.pay_n
join seed_large.unit u on u.n = p.unit_n
cross join lateral (select
  case t.what when 'receipt' then case when p.kind = 'dup' then 'duplicate_charge' else 'payment' end
              when 'refund' then 'refund' else 'payout' end as kind,
  case t.what when 'receipt' then format('%s payment %s (%s)', p.provider, p.id, coalesce(p.refund_reason, 'stay sold'))
              when 'refund' then format('Refund of payment %s: %s of %s centavos refunded', p.id, p.refunded_amount, p.amount)
              else format('Host payout for reservation %s', seed_large.uid('res', p.n)) end as description,
  case t.what when 'receipt' then 'receipt:' || p.id
              when 'refund' then format('refund:%s:%s', p.id, p.refunded_amount)
              else 'payout:' || seed_large.uid('res', p.n) end as key) k
where t.n between ${lo} and ${hi};
`;

// The legs as post_payment_receipt, post_payment_refund and a payout write them, plus the provider's
// fee (debit provider_fees, credit the receivable) inside the receipt.
const legsFrom = `
from seed_large.tx t
join seed_large.pay p on p.n = t.pay_n
join seed_large.unit u on u.n = p.unit_n
cross join lateral (select seed_large.commission(p.amount) as c, seed_large.fee(p.provider, p.method, p.amount) as f) m
cross join lateral (select case when p.refunded_amount >= p.amount then m.c
                                else round(p.refunded_amount * m.c / p.amount::numeric)::bigint end as cp) r
cross join lateral (values
  (1, 'receipt', 'guest_payment', 'receivable_' || p.provider, 'debit', p.amount),
  (2, 'receipt', case when p.kind = 'dup' then 'refund' else 'host_share' end,
      case when p.kind = 'dup' then 'refunds_payable' else 'host_payable' end, 'credit',
      case when p.kind = 'dup' then p.amount else p.amount - m.c end),
  (3, 'receipt', 'commission', 'commission_revenue', 'credit', case when p.kind = 'dup' then 0 else m.c end),
  (4, 'receipt', 'provider_fee', 'provider_fees', 'debit', m.f),
  (5, 'receipt', 'provider_fee', 'receivable_' || p.provider, 'credit', m.f),
  (1, 'refund', 'refund', 'host_payable', 'debit', p.refunded_amount - r.cp),
  (2, 'refund', 'refund', 'commission_revenue', 'debit', r.cp),
  (3, 'refund', 'refund', 'receivable_' || p.provider, 'credit', p.refunded_amount),
  (1, 'payout', 'payout', 'host_payable', 'debit', p.amount - m.c),
  (2, 'payout', 'payout', 'receivable_' || p.provider, 'credit', p.amount - m.c)
) l(leg, what, entry_type, account, direction, amount)
where l.what = t.what and l.amount > 0`;

const entriesSql = (lo: number, hi: number) => `
insert into reserve.ledger_entries (id, transaction_id, entry_type, account, direction, amount, currency, description, city_code, created_at)
select seed_large.uid('le', t.n * 8 + l.leg), seed_large.uid('tx', t.n), l.entry_type, l.account, l.direction, l.amount, 'BRL',
       null, u.city_code, t.posted_at
${legsFrom} and t.n between ${lo} and ${hi};
`;

const WEBHOOK_ERRORS = [
  "canceling statement due to statement timeout",
  "deadlock detected",
  "could not serialize access due to concurrent update",
  "terminating connection due to administrator command",
  "remaining connection slots are reserved for roles with the SUPERUSER attribute",
];

const webhooksSql = (p: SeedPlan, np: number, lo: number, hi: number) => `
insert into reserve.processed_webhooks (id, provider, event_id, event_type, status, attempts, payment_id, gateway_payment_id,
  event_created_at, payload, error_message, received_at, last_attempt_at, processed_at${p.retryColumns ? ", apply_args, next_retry_at" : ""})
select seed_large.uid('wh', z.n), z.provider, z.event_id, z.event_type, z.status, z.attempts, z.pay_id, z.gateway_payment_id,
       z.received_at - interval '1 second',
       case z.provider
         when 'stripe' then jsonb_build_object('id', z.event_id, 'object', 'event', 'type', z.event_type,
                              'created', extract(epoch from z.received_at)::bigint, 'livemode', true,
                              'data', jsonb_build_object('object', jsonb_build_object('id', z.gateway_payment_id, 'object', 'payment_intent',
                                'amount', z.amount, 'currency', 'brl', 'status', z.gateway_status,
                                'metadata', jsonb_build_object('payment_id', z.pay_id))))
         when 'mercadopago' then jsonb_build_object('id', z.event_id::bigint, 'type', z.event_type, 'action',
                              case when z.k = 0 then 'payment.updated' else 'payment.created' end, 'live_mode', true,
                              'date_created', z.received_at, 'data', jsonb_build_object('id', z.gateway_payment_id))
         else jsonb_build_object('event', z.event_type, 'charge', jsonb_build_object('correlationID', z.pay_id,
                              'identifier', z.gateway_payment_id, 'value', z.amount, 'status', z.gateway_status)) end,
       z.error_message, z.received_at, z.last_attempt_at, z.processed_at${p.retryColumns ? `, z.apply_args,
       case when z.status = 'failed' then z.last_attempt_at + least(interval '1 hour', interval '1 minute' * power(2, least(z.attempts - 1, 10))::int) end` : ""}
from (
  select y.*,
         case when y.status = 'failed' then 1 + floor(y.re * 4)::int when y.status = 'dead' then 8
              when y.rs < .004 then 2 + floor(y.re * 3)::int  -- failed at first, completed on a retry
              when y.re < .02 then 2 else 1 end as attempts,
         case when y.status in ('failed', 'dead') then
                case when y.provider = 'mercadopago' and y.re < .5
                     then (array['mercadopago lookup failed: 503 Service Unavailable', 'mercadopago lookup failed: request timed out after 10000 ms'])[1 + floor(y.re * 4)::int]
                     when y.re > .9 then format('payment %s cannot go from refunded to succeeded', y.pay_id)
                     else (${arr(WEBHOOK_ERRORS)})[1 + floor(y.re * ${WEBHOOK_ERRORS.length})::int] end
              when y.status = 'ignored' then format('event type %s is not acted on', y.event_type) end as error_message,
         case when y.status = 'failed' then least(y.received_at + (1 + floor(y.re * 4)) * interval '5 minutes', ${A(p)})
              when y.status = 'dead' then least(y.received_at + interval '12 hours', ${A(p)})
              else y.received_at end as last_attempt_at,
         case when y.status in ('completed', 'ignored')
              then least(y.received_at + interval '20 milliseconds' + y.re * interval '400 milliseconds'
                         + case when y.rs < .004 then interval '3 minutes' else interval '0' end, ${A(p)})
              when y.status = 'failed' then least(y.received_at + (1 + floor(y.re * 4)) * interval '5 minutes', ${A(p)})
              else least(y.received_at + interval '12 hours', ${A(p)}) end as processed_at,
         -- what apply_payment_status needs to retry or replay the event (null when it was ignored)
         case when y.status <> 'ignored' then jsonb_strip_nulls(jsonb_build_object(
                'payment_id', y.pay_id, 'gateway_payment_id', y.gateway_payment_id,
                'status', case when y.event_type in ('charge.refunded') or (y.k = 1 and y.pay_status in ('refunded', 'partially_refunded'))
                                 then y.pay_status
                               when y.event_type = 'charge.dispute.created' then 'disputed'
                               when y.k = 1 and y.method = 'card' then 'processing'
                               when y.k >= 1 then 'pending'
                               when y.pay_status in ('succeeded', 'refunded', 'partially_refunded', 'disputed') then 'succeeded'
                               else y.pay_status end,
                'refunded_amount', case when y.k = 1 and y.pay_status in ('refunded', 'partially_refunded') then y.refunded_amount end,
                'event_at', y.received_at - interval '1 second', 'gateway_status', y.gateway_status,
                -- the provider's money, as every provider_update carries it (what arrived, on a success)
                'payment_reference', y.pay_id, 'amount', y.amount, 'currency', 'BRL',
                'amount_received', case when y.k = 0 and y.pay_status in ('succeeded', 'refunded', 'partially_refunded', 'disputed')
                                        then y.amount end)) end as apply_args
  from (
    select x.*,
           case when x.rs < .004 and (x.received_at > ${A(p)} - interval '3 days' or x.kind = 'flight' and x.rs < .0012) then 'failed'
                when (x.kind = 'flight' and x.k = 0 and x.re < .3) then 'failed'
                when x.rs >= .004 and x.rs < .0048 then 'dead'
                when x.event_type in ('payment_intent.created', 'payment_intent.requires_action', 'charge.updated',
                                      'merchant_order', 'OPENPIX:TRANSACTION_RECEIVED', 'OPENPIX:CHARGE_CREATED') then 'ignored'
                else 'completed' end as status
    from (
      select w.n, k, p.kind, p.status as pay_status, p.refunded_amount, p.method, p.provider, p.id as pay_id, p.gateway_payment_id, p.amount,
             seed_large.gateway_status(p.provider, p.status) as gateway_status,
             seed_large.r(w.n, 61) as rs, seed_large.r(w.n, 62) as re,
             case p.provider when 'stripe' then 'evt_3' || substr(md5('evt:' || w.n), 1, 24)
                             when 'mercadopago' then (120000000000 + w.n)::text
                             else 'openpix:' || md5('evt:' || w.n)::uuid end as event_id,
             case p.provider
               when 'stripe' then case
                 when k = 0 then case p.status when 'failed' then 'payment_intent.payment_failed' when 'processing' then 'payment_intent.processing'
                                   when 'pending' then 'payment_intent.requires_action' when 'cancelled' then 'payment_intent.canceled'
                                   when 'expired' then 'payment_intent.canceled' else 'payment_intent.succeeded' end
                 when k = 1 and p.status in ('refunded', 'partially_refunded') then 'charge.refunded'
                 when k = 1 and p.status = 'disputed' then 'charge.dispute.created'
                 when k = 1 and p.method = 'card' then 'payment_intent.processing'
                 when k = 1 then 'payment_intent.requires_action'
                 else 'charge.updated' end
               when 'mercadopago' then case when k = 1 and p.status not in ('refunded', 'partially_refunded') and seed_large.r(w.n, 63) < .1
                                            then 'merchant_order' else 'payment' end
               else case
                 when k = 0 then case when p.status in ('succeeded', 'refunded', 'partially_refunded', 'disputed') then 'OPENPIX:CHARGE_COMPLETED'
                                      when p.status in ('pending', 'processing') then 'OPENPIX:CHARGE_CREATED'
                                      else 'OPENPIX:CHARGE_EXPIRED' end
                 when k = 1 then 'OPENPIX:TRANSACTION_RECEIVED'
                 else 'OPENPIX:CHARGE_CREATED' end end as event_type,
             least(case
               when k = 0 then coalesce(p.succeeded_at, p.failed_at, p.status_changed_at) + seed_large.r(w.n, 64) * interval '5 seconds'
               when k = 1 and p.status in ('refunded', 'partially_refunded') then p.refunded_at + interval '2 seconds'
               when k = 1 and p.status = 'disputed' then p.status_changed_at + interval '1 second'
               when k = 1 then p.created_at + interval '3 seconds'
               else p.status_changed_at + interval '1 minute' end, ${A(p)}) as received_at
      from generate_series(${lo}, ${hi}) w(n)
      cross join lateral (select (w.n - 1) / ${np} as k) kk
      join seed_large.pay p on p.n = (w.n - 1) % ${np} + 1
    ) x
  ) y
) z;
`;

const auditSql = (p: SeedPlan, np: number, base: number, lo: number, hi: number) => {
  const old = Math.round(p.auditRows * p.auditOldShare);
  const young = p.auditRows - old;
  return `
insert into reserve.audit_logs (id, occurred_at, actor, action, table_name, row_id, old_values, new_values, reason, xact_id)
overriding system value
select ${base} + a.n,
       case when a.n <= ${old}
            then ${A(p)} - interval '545 days' + ((a.n - 0.5)::float8 / ${Math.max(old, 1)}) * interval '179 days'
            else ${A(p)} - interval '365 days' + ((a.n - ${old} - 0.5)::float8 / ${Math.max(young, 1)}) * interval '365 days' end,
       case when x.rx < .62 then 'service_role' when x.rx < .97 then 'postgres'
            else (array['ops:ana', 'ops:bruno', 'ops:carla'])[1 + floor((x.rx - .97) * 100)::int] end,
       y.action, t.tbl, y.row_id,
       case when y.action = 'UPDATE' then case t.tbl
              when 'payments' then jsonb_build_object('status', 'processing')
              when 'booking_intents' then jsonb_build_object('status', 'pending')
              when 'reservations' then jsonb_build_object('status', 'host_commit_pending')
              else jsonb_build_object('is_blocked', false) end end,
       case t.tbl
         when 'payments' then jsonb_build_object('id', y.row_id, 'status', case when y.action = 'UPDATE' then 'succeeded' else 'pending' end,
                                                 'amount', 20000 + floor(x.ra * 400000)::bigint)
         when 'booking_intents' then jsonb_build_object('id', y.row_id, 'status', case when y.action = 'UPDATE' then 'converted' else 'pending' end)
         when 'reservations' then jsonb_build_object('id', y.row_id, 'status', case when y.action = 'UPDATE' then 'confirmed' else 'host_commit_pending' end)
         when 'ledger_transactions' then jsonb_build_object('id', y.row_id, 'kind', 'payment')
         when 'ledger_entries' then jsonb_build_object('id', y.row_id, 'account', 'host_payable', 'direction', 'credit',
                                                       'amount', 20000 + floor(x.ra * 400000)::bigint)
         else jsonb_build_object('is_blocked', x.ra < .5, 'price', 20000 + floor(x.ra * 400000)::bigint) end,
       case when x.rx >= .97 then (array['runbook P2: stuck payment recovered from the provider status',
                                         'runbook P1: reservation moved to another unit after an overbooking',
                                         'guest asked to cancel by phone'])[1 + floor(x.ra * 3)::int] end,
       1000000 + a.n / 3
from generate_series(${lo}, ${hi}) a(n)
cross join lateral (select seed_large.r(a.n, 71) as rt, seed_large.r(a.n, 72) as ra, seed_large.r(a.n, 73) as rx,
                           1 + a.n % ${np} as q) x
cross join lateral (select case when x.rt < .30 then 'payments' when x.rt < .50 then 'booking_intents' when x.rt < .65 then 'reservations'
                                when x.rt < .75 then 'ledger_transactions' when x.rt < .95 then 'ledger_entries'
                                else 'availability_calendar' end as tbl) t
cross join lateral (select
  case when t.tbl in ('ledger_transactions', 'ledger_entries') or x.ra < .55 then 'INSERT' else 'UPDATE' end as action,
  case t.tbl when 'payments' then seed_large.uid('pay', x.q)::text
             when 'booking_intents' then seed_large.uid('intent', x.q)::text
             when 'reservations' then seed_large.uid('res', x.q)::text
             when 'ledger_transactions' then seed_large.uid('tx', x.q)::text
             when 'ledger_entries' then seed_large.uid('le', x.q * 8 + 1)::text
             else seed_large.uid('unit', 1 + x.q % ${p.units}) || ':' || (${T(p)} + (x.q % ${NIGHTS})::int - ${NIGHTS_BEFORE}) end as row_id) y
order by a.n;
`;
};

// ---------------------------------------------------------------- the load

const LOAD_SETTINGS = "set local session_replication_role = replica; set local synchronous_commit = off;";

async function inTx(sql: Sql, query: string): Promise<number> {
  let count = 0;
  await sql.begin(async (tx) => {
    await tx.unsafe(LOAD_SETTINGS);
    const res = await tx.unsafe(query);
    count = res.count ?? 0;
  });
  return count;
}

async function scalar(sql: Sql, query: string): Promise<number> {
  const [row] = await sql.unsafe(query);
  return Number(Object.values(row)[0]);
}

/** Runs fn over [1, last] in chunks of `size`, `concurrency` at a time; fn returns rows written. */
async function chunked(last: number, size: number, concurrency: number, fn: (lo: number, hi: number) => Promise<number>,
                       onRows: (n: number) => void): Promise<void> {
  let next = 1;
  const worker = async () => {
    while (next <= last) {
      const lo = next;
      const hi = Math.min(last, lo + size - 1);
      next = hi + 1;
      onRows(await fn(lo, hi));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
}

export const LOADED_TABLES = [
  "cities", "properties_map", "unit_map", "availability_calendar", "booking_intents", "booking_locks", "payments",
  "reservations", "payment_polls", "job_heartbeats", "ledger_transactions", "ledger_entries", "processed_webhooks", "processed_webhook_keys",
  "audit_logs", "refund_requests",
] as const;

/** Fills an empty, migrated database with a year of a busy platform. */
export async function seedLarge(url: string, opts: SeedLargeOptions = {}): Promise<SeedLargeResult> {
  const plan = planFor(opts);
  const bar = new ProgressBar(opts.log === undefined ? process.stderr : opts.log);
  const concurrency = opts.concurrency ?? 2;
  const phases: PhaseTiming[] = [];
  const sql = postgres(url, { max: concurrency + 1, onnotice: () => {}, idle_timeout: 0, max_lifetime: null });
  const step = async (name: string, total: number, fn: (add: (n: number) => void) => Promise<void>) => {
    const ph = bar.phase(name, total);
    await fn(ph.add);
    phases.push(ph.end());
  };
  try {
    const [{ n: existing }] = await sql`select count(*)::int as n from reserve.payments`;
    if (existing > 0) throw new Error(`reserve.payments already has ${existing} rows: seed:large fills an empty database`);

    const [schema] = await sql`
      select exists (select 1 from information_schema.columns where table_schema = 'reserve'
                       and table_name = 'processed_webhooks' and column_name = 'next_retry_at') as retry,
             to_regclass('reserve.refund_requests') is not null as refunds`;
    plan.retryColumns = schema.retry;
    plan.refundRequests = schema.refunds;
    let S = 0, M = 0, NP = 0;
    await step("plan (staging)", 5, async (add) => {
      await sql.unsafe(setupSql(plan));
      add(1);
      await sql.unsafe(soldSql(plan));
      S = await scalar(sql, "select count(*) from seed_large.pay");
      add(1);
      await sql.unsafe(flightSql(plan, S));
      const F = await scalar(sql, "select count(*) from seed_large.pay where kind = 'flight'");
      add(1);
      M = Math.max(Math.round(plan.payments * 0.1), plan.payments - S - F);
      await sql.unsafe(otherSql(plan, S + F, M));
      add(1);
      await sql.unsafe(dupSql(plan, S + F + M));
      await sql.unsafe(txStageSql(plan));
      await sql.unsafe("analyze seed_large.pay; analyze seed_large.unit; analyze seed_large.tx");
      NP = await scalar(sql, "select count(*) from seed_large.pay");
      add(1);
    });

    await step("cities, units", plan.cities + plan.properties + plan.units, async (add) => {
      await inTx(sql, worldSql(plan));
      add(plan.cities + plan.properties + plan.units);
    });

    const unitsPerChunk = Math.max(1, Math.floor(CHUNK / NIGHTS) * 2);
    await step("availability_calendar", plan.units * NIGHTS, async (add) => {
      await chunked(plan.units, unitsPerChunk, concurrency, (lo, hi) => inTx(sql, calendarSql(plan, lo, hi)), add);
    });

    const intents = await scalar(sql, "select count(*) from seed_large.pay where kind <> 'dup'");
    await step("booking_intents", intents, async (add) => {
      await chunked(NP, CHUNK, concurrency, (lo, hi) => inTx(sql, intentsSql(plan, lo, hi)), add);
    });
    await step("payments", NP, async (add) => {
      await chunked(NP, CHUNK, concurrency, (lo, hi) => inTx(sql, paymentsSql(lo, hi)), add);
    });
    await step("reservations", S, async (add) => {
      await chunked(S, CHUNK, concurrency, (lo, hi) => inTx(sql, reservationsSql(plan, lo, hi)), add);
    });
    if (plan.refundRequests) {
      const refunds = await scalar(sql, "select count(*) from seed_large.pay where status in ('refunded', 'partially_refunded')");
      await step("refund_requests", refunds, async (add) => {
        await inTx(sql, refundRequestsSql);
        add(refunds);
      });
    }
    const held = await scalar(sql, "select coalesce(sum(check_out - check_in), 0) from seed_large.pay where kind = 'flight'");
    const inFlight = await scalar(sql, "select count(*) from seed_large.pay where kind = 'flight'");
    await step("locks, polls, beats", held + inFlight + 288, async (add) => {
      await inTx(sql, locksSql(plan));
      add(held + inFlight + 288);
    });

    const txCount = await scalar(sql, "select count(*) from seed_large.tx");
    await step("ledger_transactions", txCount, async (add) => {
      await chunked(txCount, CHUNK, concurrency, (lo, hi) => inTx(sql, txSql(lo, hi)), add);
    });
    const entryCount = await scalar(sql, `select count(*) ${legsFrom}`);
    await step("ledger_entries", entryCount, async (add) => {
      await chunked(txCount, Math.floor(CHUNK / 2), concurrency, (lo, hi) => inTx(sql, entriesSql(lo, hi)), add);
    });
    // the entries went in around the posting function: their kept balances and host days from the entries
    await step("ledger balances", 1, async (add) => {
      const [{ there }] = await sql`select to_regprocedure('reserve.rebuild_ledger_balances()') is not null as there`;
      if (there) await sql`select reserve.rebuild_ledger_balances()`;
      add(1);
    });

    // a month per partition over the history, as a database that lived the year would have (else every
    // row lands in the default partition, which retention can only empty row by row)
    await sql.unsafe(`do $$ begin
      if to_regprocedure('reserve.create_audit_log_partitions(date, integer)') is not null then
        perform reserve.create_audit_log_partitions((${A(plan)} - interval '546 days')::date, 3);
      end if;
      if to_regprocedure('reserve.create_processed_webhook_partitions(date, integer)') is not null then
        perform reserve.create_processed_webhook_partitions((${A(plan)} - interval '366 days')::date, 3);
      end if;
    end $$`);
    await step("processed_webhooks", plan.webhooks, async (add) => {
      await chunked(plan.webhooks, CHUNK, concurrency, (lo, hi) => inTx(sql, webhooksSql(plan, NP, lo, hi)), add);
      // the dedupe keys the trigger (skipped by the load) writes for each row
      await sql.unsafe(`do $$ begin
        if to_regclass('reserve.processed_webhook_keys') is not null then
          insert into reserve.processed_webhook_keys (provider, event_id, webhook_id, received_at)
          select provider, event_id, id, received_at from reserve.processed_webhooks;
        end if;
      end $$`);
    });
    // the migrations' own audit rows (settings, policies) come first
    const auditBase = await scalar(sql, "select coalesce(max(id), 0) from reserve.audit_logs");
    await step("audit_logs", plan.auditRows, async (add) => {
      await chunked(plan.auditRows, CHUNK * 2, concurrency, (lo, hi) => inTx(sql, auditSql(plan, NP, auditBase, lo, hi)), add);
      await sql.unsafe(`select setval(pg_get_serial_sequence('reserve.audit_logs', 'id'), ${auditBase + plan.auditRows})`);
    });

    await step("analyze", LOADED_TABLES.length, async (add) => {
      await sql.unsafe("drop schema seed_large cascade");
      // two at a time, like the load
      await chunked(LOADED_TABLES.length, 1, concurrency, async (lo) => {
        const t = LOADED_TABLES[lo - 1];
        const [{ there }] = await sql`select to_regclass(${"reserve." + t}) is not null as there`;
        if (there) await sql.unsafe(`analyze reserve.${t}`);
        return 1;
      }, add);
    });
    return { plan, phases };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

// ---------------------------------------------------------------- checks

export interface LargeReport {
  counts: Record<string, number>;
  databaseSize: string;
  databaseBytes: number;
  paymentStatus: Record<string, number>;
  reservationStatus: Record<string, number>;
  webhookStatus: Record<string, number>;
  errorCodes: Record<string, number>;
  inFlight: { pending: number; processing: number; stuckOverHour: number; pixPendingOver30Min: number; doubleCharges: number };
  auditDue: number;
  checks: { name: string; value: number | string; ok: boolean; ms: number }[];
}

/** Row counts, status mixes and the invariants: counters, overbooking, overlaps and the ledger. */
export async function verifyLarge(url: string, since?: string): Promise<LargeReport> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const counts: Record<string, number> = {};
    for (const t of [...LOADED_TABLES, "audit_logs_archive"]) {
      const [{ there }] = await sql`select to_regclass(${"reserve." + t}) is not null as there`;
      if (there) counts[t] = await scalar(sql, `select count(*) from reserve.${t}`);
    }
    const group = async (q: string) =>
      Object.fromEntries((await sql.unsafe(q)).map((r) => [r.k as string, Number(r.n)]));
    const [size] = await sql`select pg_size_pretty(pg_database_size(current_database())) as pretty,
                                    pg_database_size(current_database())::bigint as bytes`;
    const [flight] = await sql`
      select count(*) filter (where status = 'pending')::int as pending,
             count(*) filter (where status = 'processing')::int as processing,
             count(*) filter (where status in ('pending', 'processing') and status_changed_at < now() - interval '1 hour')::int as stuck,
             count(*) filter (where status = 'pending' and method = 'pix' and created_at < now() - interval '30 minutes')::int as pix_old,
             count(*) filter (where duplicate_of is not null)::int as dups
      from reserve.payments`;
    const checks: LargeReport["checks"] = [];
    const check = async (name: string, q: string, ok: (v: number) => boolean) => {
      const t0 = Date.now();
      const v = await scalar(sql, q);
      checks.push({ name, value: v, ok: ok(v), ms: Date.now() - t0 });
    };
    const zero = (v: number) => v === 0;
    const sinceSql = since ? `'${since}'::date` : "current_date - 400";
    await check("availability_counter_drift rows", "select count(*) from reserve.availability_counter_drift", zero);
    await check("overbooking_check rows", "select count(*) from reserve.overbooking_check", zero);
    await check("overlapping live stays (allotment 1)", `
      select count(*) from reserve.reservations a join reserve.reservations b
        on a.unit_id = b.unit_id and a.id < b.id and a.stay && b.stay
      where a.sole_occupancy and b.sole_occupancy
        and reserve.is_live_reservation(a.status) and reserve.is_live_reservation(b.status)`, zero);
    await check("find_ledger_imbalances over the year", `select count(*) from reserve.find_ledger_imbalances(${sinceSql})`, zero);
    const [{ kept }] = await sql`select to_regprocedure('reserve.ledger_balance_drift(boolean)') is not null as kept`;
    if (kept) await check("ledger_balance_drift(full) accounts", "select count(*) from reserve.ledger_balance_drift(true)", zero);
    await check("ledger_balance_check days not OK", "select count(*) from reserve.ledger_balance_check where status <> 'OK'", zero);
    await check("ledger total debits - credits", `
      select coalesce(sum(case direction when 'debit' then amount else -amount end), 0) from reserve.ledger_entries`, zero);
    await check("succeeded payments (not duplicates) without a reservation", `
      select count(*) from reserve.payments p
      where p.status in ('succeeded', 'refunded', 'partially_refunded', 'disputed') and p.duplicate_of is null
        and not exists (select 1 from reserve.reservations r where r.payment_id = p.id)`, zero);
    await check("succeeded payments without their receipt", `
      select count(*) from reserve.payments p
      where p.succeeded_at is not null
        and not exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'receipt:' || p.id)`, zero);
    await check("payments in flight without a poll", `
      select count(*) from reserve.payments p where p.status in ('pending', 'processing')
        and not exists (select 1 from reserve.payment_polls x where x.payment_id = p.id)`, zero);
    await check("is_available out of step", `
      select count(*) from reserve.availability_calendar
      where is_available is distinct from (not is_blocked and bookings_count + temp_holds < allotment)`, zero);
    const auditDue = await scalar(sql, "select count(*) from reserve.audit_logs where occurred_at < now() - interval '365 days'");
    return {
      counts,
      databaseSize: size.pretty,
      databaseBytes: Number(size.bytes),
      paymentStatus: await group("select status as k, count(*) as n from reserve.payments group by 1 order by 2 desc"),
      reservationStatus: await group("select status as k, count(*) as n from reserve.reservations group by 1 order by 2 desc"),
      webhookStatus: await group("select status as k, count(*) as n from reserve.processed_webhooks group by 1 order by 2 desc"),
      errorCodes: await group("select error_code as k, count(*) as n from reserve.payments where error_code is not null group by 1 order by 2 desc"),
      inFlight: { pending: flight.pending, processing: flight.processing, stuckOverHour: flight.stuck,
                  pixPendingOver30Min: flight.pix_old, doubleCharges: flight.dups },
      auditDue,
      checks,
    };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

// ---------------------------------------------------------------- npm run seed:large

const LARGE_DB = "reserve_large";

// production durability (fsync, full_page_writes, synchronous_commit on; the load turns the last off
// per transaction); memory and checkpoint spacing sized for a bulk load on a 24 GB machine
const LARGE_SETTINGS = {
  shared_buffers: "2GB",
  maintenance_work_mem: "1GB",
  work_mem: "64MB",
  effective_cache_size: "12GB",
  max_wal_size: "16GB",
  checkpoint_timeout: "30min",
};

function formatReport(r: SeedLargeResult, v: LargeReport, totalMs: number, extra: PhaseTiming[]): string {
  const fmt = (n: number) => n.toLocaleString("en-US");
  const lines = [
    `seed:large at SCALE=${r.plan.scale}, anchored at ${r.plan.anchor}`,
    "",
    "phase                       rows          seconds   rows/s",
    ...[...extra, ...r.phases].map((p) =>
      `${p.phase.padEnd(26)} ${fmt(p.rows).padStart(12)} ${(p.ms / 1000).toFixed(1).padStart(9)} ${
        p.ms > 0 ? fmt(Math.round(p.rows / (p.ms / 1000))).padStart(9) : ""}`),
    `${"total".padEnd(26)} ${"".padStart(12)} ${(totalMs / 1000).toFixed(1).padStart(9)}`,
    "",
    "table                       rows",
    ...Object.entries(v.counts).map(([t, n]) => `${t.padEnd(26)} ${fmt(n).padStart(12)}`),
    "",
    `database size ${v.databaseSize}`,
    `payments by status ${JSON.stringify(v.paymentStatus)}`,
    `payment error codes ${JSON.stringify(v.errorCodes)}`,
    `in flight ${JSON.stringify(v.inFlight)}`,
    `reservations by status ${JSON.stringify(v.reservationStatus)}`,
    `webhooks by status ${JSON.stringify(v.webhookStatus)}`,
    `audit rows older than 365 days (due for retention) ${fmt(v.auditDue)}`,
    "",
    "check                                                  value   ms",
    ...v.checks.map((c) => `${c.ok ? "ok  " : "FAIL"} ${c.name.padEnd(50)} ${String(c.value).padStart(6)} ${String(c.ms).padStart(6)}`),
  ];
  return lines.join("\n");
}

async function main() {
  const keep = process.argv.includes("--keep");
  const opts: SeedLargeOptions = {
    scale: Number(process.env.SCALE ?? 1),
    now: process.env.SEED_NOW || undefined,
    auditOldShare: process.env.SEED_AUDIT_OLD_SHARE ? Number(process.env.SEED_AUDIT_OLD_SHARE) : undefined,
    concurrency: process.env.SEED_CONCURRENCY ? Number(process.env.SEED_CONCURRENCY) : undefined,
  };
  planFor(opts); // refuse bad settings before booting anything
  const started = Date.now();
  const extra: PhaseTiming[] = [];
  let pg: LocalPostgres | undefined;
  let url = process.env.DATABASE_URL;
  const dir = path.resolve(projectRoot, process.env.RESERVE_LARGE_DIR ?? ".data-large");
  const bar = new ProgressBar();
  try {
    if (!url) {
      const ph = bar.phase("cluster + migrations", 1);
      pg = await startLocalPostgres({
        dataDir: path.join(dir, "postgres"),
        port: await freePort(),
        logFile: path.join(dir, "postgres.log"),
        settings: LARGE_SETTINGS,
      });
      // a fresh database each run, so two runs give the same data
      const admin = postgres(pg.url(), { max: 1, onnotice: () => {} });
      await admin.unsafe(`drop database if exists ${LARGE_DB} with (force)`);
      await admin.unsafe(`create database ${LARGE_DB}`);
      await admin.end();
      url = pg.url(LARGE_DB);
      await migrate(url);
      ph.add(1);
      extra.push(ph.end());
    }
    const result = await seedLarge(url, opts);
    const ph = bar.phase("checks", 1);
    const report = await verifyLarge(url);
    ph.add(1);
    const checks = ph.end();
    console.log(formatReport(result, report, Date.now() - started, extra));
    console.log(`checks took ${(checks.ms / 1000).toFixed(1)} s`);
    const failed = report.checks.filter((c) => !c.ok);
    if (failed.length) console.error(`error: ${failed.length} check(s) failed: ${failed.map((c) => c.name).join(", ")}`);
    console.log(`\nDatabase URL ${url}`);
    if (pg && keep) {
      console.log("the cluster keeps running (--keep); Ctrl-C stops it, the data stays");
      await new Promise<void>((resolve) => {
        for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(sig, () => resolve());
      });
    } else if (pg) {
      console.log(`stopping the cluster; the data stays in ${dir} (--keep leaves it running)`);
    }
    await pg?.stop();
    process.exitCode = failed.length ? 1 : 0;
  } catch (err) {
    console.error(`\nerror: ${err instanceof Error ? err.message : String(err)}`);
    if (process.env.SEED_DEBUG) { const e = err as { query?: string; position?: string }; console.error(e.query?.slice(Math.max(0, Number(e.position) - 300), Number(e.position) + 50)); }
    await pg?.stop().catch(() => undefined);
    process.exitCode = 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}

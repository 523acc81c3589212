// The monthly partitioning of processed_webhooks converts the landed table without losing a row: a
// database migrated up to the migration before it gets deliveries across fourteen months (and one far in
// the future, for the default partition) and a discrepancy naming one of them; then the rest of the
// migrations run. Every row is there with the same contents and ids, each has its dedupe key, the months
// are partitions, and the discrepancy still names its delivery. On that database: a redelivery is still a
// duplicate answered from reads, a second row for one event is still refused (23505), and retention drops
// whole months past 180 days while the keys outlive them, so a very late redelivery is still a duplicate.
import postgres from "postgres";
import { describe, expect, it } from "vitest";
import { useMigratedBefore } from "../helpers/migrated_before.ts";

const FIRST_PARTITIONED = "20261203195000";
const db = useMigratedBefore(FIRST_PARTITIONED, "webhook_partition");

const fingerprint = async () => {
  const [r] = await db.sql`select count(*)::int as n, md5(string_agg(t::text, '|' order by id)) as digest from reserve.processed_webhooks t`;
  return r;
};
const event = (eventId: string) => db.sql.json({ provider: "stripe", event_id: eventId, event_type: "charge.updated", payload: { id: eventId } });

describe("processed_webhooks partitioning", () => {
  it("keeps every delivery and its id, gives each its key, and the discrepancy its delivery", async () => {
    await db.sql`insert into reserve.processed_webhooks (provider, event_id, event_type, status, received_at, payload)
              select 'stripe', 'evt_old_' || g, 'payment_intent.succeeded', case when g % 7 = 0 then 'dead' else 'completed' end,
                     now() - make_interval(days => g * 3), jsonb_build_object('n', g)
              from generate_series(1, 140) g`;
    await db.sql`insert into reserve.processed_webhooks (provider, event_id, event_type, status, received_at)
              values ('openpix', 'far-future', 'OPENPIX:CHARGE_COMPLETED', 'completed', now() + interval '2 years')`;
    const [{ id: flagged }] = await db.sql`select id from reserve.processed_webhooks where event_id = 'evt_old_3'`;
    const before = await fingerprint();
    expect(before.n).toBe(141);

    const applied = await db.applyRest();
    expect(applied[0]).toMatch(new RegExp(`^${FIRST_PARTITIONED}_`));

    expect(await fingerprint()).toEqual(before);
    const [keys] = await db.sql`select count(*)::int as n,
                                    count(*) filter (where not exists (select 1 from reserve.processed_webhooks w
                                                     where w.id = k.webhook_id and w.received_at = k.received_at
                                                       and w.provider = k.provider and w.event_id = k.event_id))::int as orphans
                             from reserve.processed_webhook_keys k`;
    expect(keys).toEqual({ n: 141, orphans: 0 });
    const [{ kind }] = await db.sql`select relkind as kind from pg_class where oid = 'reserve.processed_webhooks'::regclass`;
    expect(kind).toBe("p");
    const parts = await db.sql`select c.relname, (select count(*) from reserve.processed_webhooks w where w.tableoid = c.oid)::int as n
                            from pg_inherits i join pg_class c on c.oid = i.inhrelid
                            where i.inhparent = 'reserve.processed_webhooks'::regclass order by 1`;
    const [{ months }] = await db.sql`select (extract(year from age(date_trunc('month', current_date), date_trunc('month', min(received_at)))) * 12
                                          + extract(month from age(date_trunc('month', current_date), date_trunc('month', min(received_at)))))::int + 4 as months
                                   from reserve.processed_webhooks where event_id <> 'far-future'`;
    expect(parts.filter((p) => p.relname !== "processed_webhooks_default")).toHaveLength(months);
    expect(parts.find((p) => p.relname === "processed_webhooks_default")?.n).toBe(1);
    // every partition is private like its table
    const open = await db.sql`select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
                           where i.inhparent = 'reserve.processed_webhooks'::regclass
                             and (not c.relrowsecurity or has_table_privilege('anon', c.oid, 'select'))`;
    expect(open).toEqual([]);
    // the discrepancies' reference now points at the key (the partitioned table's key holds received_at)
    const [{ fk }] = await db.sql`select pg_get_constraintdef(oid) as fk from pg_constraint where conname = 'money_discrepancies_webhook_id_fkey'`;
    expect(fk).toBe("FOREIGN KEY (webhook_id) REFERENCES reserve.processed_webhook_keys(webhook_id) ON DELETE SET NULL");
    expect((await db.sql`select 1 from reserve.processed_webhook_keys where webhook_id = ${flagged}`)).toHaveLength(1);
    // the views over it are back, and read it
    const [{ n }] = await db.sql`select count(*)::int as n from reserve.webhook_status`;
    expect(n).toBeGreaterThan(0);
  });

  it("answers a redelivery from reads, and refuses a second row for one event", async () => {
    const first = (await db.sql`select * from reserve.process_webhook_event(reserve.as_webhook_event(${event("evt_part_1")}))`)[0]!;
    expect(first).toMatchObject({ webhook_status: "ignored", duplicate: false });
    await db.sql.begin(async (tx) => {
      const [again] = await tx`select * from reserve.process_webhook_event(reserve.as_webhook_event(${event("evt_part_1")}))`;
      expect(again).toMatchObject({ webhook_id: first.webhook_id, duplicate: true });
      const [facts] = await tx`select pg_current_xact_id_if_assigned()::text as xid`;
      expect(facts.xid).toBeNull();
    });
    const err = await db.sql`insert into reserve.processed_webhooks (provider, event_id, event_type) values ('stripe', 'evt_part_1', 'x')`
      .catch((e: postgres.PostgresError) => e);
    expect(err).toMatchObject({ code: "23505", constraint_name: "processed_webhook_keys_pkey" });
    expect((await db.sql`select count(*)::int as n from reserve.processed_webhooks where event_id = 'evt_part_1'`)[0]!.n).toBe(1);
  });

  it("retention drops whole months past 180 days; the keys outlive them, so a very late redelivery is a duplicate", async () => {
    const before = await db.sql`select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
                             where i.inhparent = 'reserve.processed_webhooks'::regclass order by 1`;
    const young = db.sql`select count(*)::int as n from reserve.processed_webhooks where received_at >= now() - interval '179 days'`;
    const [youngBefore] = await young;
    const rows = await db.sql`select * from reserve.run_retention_cleanup()`;
    const by = Object.fromEntries(rows.map((r) => [r.table_name, r]));
    expect(Number(by.processed_webhooks.rows_moved)).toBeGreaterThan(0);
    const [left] = await db.sql`select count(*) filter (where received_at < now() - interval '211 days')::int as past,
                                    min(received_at) as oldest from reserve.processed_webhooks`;
    expect(left.past).toBe(0);
    const after = await db.sql`select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
                            where i.inhparent = 'reserve.processed_webhooks'::regclass order by 1`;
    expect(after.length).toBeLessThan(before.length);
    // no row of the months kept was lost: everything of the last 180 days is there
    expect((await young)[0]).toEqual(youngBefore);
    expect(youngBefore.n).toBeGreaterThan(59);
    // a key older than the rows (received 181..211 days ago) stays; older than 212 days it goes
    const [k] = await db.sql`select count(*) filter (where received_at < now() - interval '212 days')::int as expired,
                                 count(*) filter (where not exists (select 1 from reserve.processed_webhooks w where w.id = k.webhook_id))::int as rowless
                          from reserve.processed_webhook_keys k`;
    expect(k.expired).toBe(0);
    const [{ event_id: lateId }] = await db.sql`select k.event_id from reserve.processed_webhook_keys k
      where not exists (select 1 from reserve.processed_webhooks w where w.id = k.webhook_id) order by k.received_at limit 1`;
    expect(k.rowless).toBeGreaterThan(0);
    const [late] = await db.sql`select * from reserve.process_webhook_event(reserve.as_webhook_event(${event(lateId)}))`;
    expect(late).toMatchObject({ duplicate: true, webhook_status: "completed", outcome: "duplicate" });
    expect((await db.sql`select count(*)::int as n from reserve.processed_webhooks where event_id = ${lateId}`)[0]!.n).toBe(0);
    // the partitions ahead are there: this month and three more
    const [{ ahead }] = await db.sql`select count(*)::int as ahead from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'reserve.processed_webhooks'::regclass
        and c.relname >= 'processed_webhooks_p' || to_char(now(), 'YYYYMM') and c.relname <> 'processed_webhooks_default'`;
    expect(ahead).toBe(4);
  });
});

// The monthly partitioning of audit_logs and audit_logs_archive converts the landed tables without
// losing a row: a database migrated up to the migration before it gets audit and archive rows across
// twenty months (and one far in the future, for the default partition) and a view reading audit_logs;
// then the rest of the migrations run. Every row is there with the same contents and ids, the identity
// goes on after the last id, the view is back with its grant, and the months are partitions.
import { describe, expect, it } from "vitest";
import { useMigratedBefore } from "../helpers/migrated_before.ts";

const FIRST_PARTITIONED = "20261203145200";
const db = useMigratedBefore(FIRST_PARTITIONED, "partition");

/** The rows up to an id (the later migrations' own writes, settings and rules they add, come after). */
const fingerprint = async (table: string, upTo?: string) => {
  const [r] = await db.sql.unsafe(`select count(*)::int as n, max(id)::text as max_id,
                                       md5(string_agg(t::text, '|' order by id)) as digest from reserve.${table} t
                                where $1::bigint is null or id <= $1::bigint`, [upTo ?? null]);
  return r;
};

describe("audit_logs partitioning", () => {
  it("keeps every row, id and view of the landed tables", async () => {
    await db.sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id, new_values)
              select now() - make_interval(hours => g * 7), 'loader', 'UPDATE', 'payments', g::text, jsonb_build_object('n', g)
              from generate_series(1, 2000) g`;
    await db.sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              values (now() + interval '2 years', 'loader', 'INSERT', 'payments', 'far-future')`;
    await db.sql`insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, row_id, xact_id)
              select 1000000 + g, now() - interval '400 days' - make_interval(days => g), 'old', 'INSERT', 'payments', g::text, 1
              from generate_series(1, 90) g`;
    await db.sql`create view reserve.audit_probe with (security_invoker = true) as select id, actor, occurred_at from reserve.audit_logs`;
    await db.sql`comment on view reserve.audit_probe is 'a view over audit_logs, to be carried over'`;
    await db.sql`grant select on reserve.audit_probe to service_role`;
    const before = { audit: await fingerprint("audit_logs"), archive: await fingerprint("audit_logs_archive") };
    expect(before.audit.n).toBeGreaterThan(2001); // and the rows the migrations' own writes left

    const applied = await db.applyRest();
    expect(applied[0]).toMatch(new RegExp(`^${FIRST_PARTITIONED}_`));

    expect(await fingerprint("audit_logs", before.audit.max_id)).toEqual(before.audit);
    expect(await fingerprint("audit_logs_archive", before.archive.max_id)).toEqual(before.archive);
    const [kinds] = await db.sql`select (select relkind from pg_class where oid = 'reserve.audit_logs'::regclass) as audit,
                                     (select relkind from pg_class where oid = 'reserve.audit_logs_archive'::regclass) as archive`;
    expect(kinds).toEqual({ audit: "p", archive: "p" });
    // a month per partition from the oldest row to three months ahead; the far-future row in the default one
    const parts = await db.sql`select c.relname, (select count(*) from reserve.audit_logs a where a.tableoid = c.oid)::int as n
                            from pg_inherits i join pg_class c on c.oid = i.inhrelid
                            where i.inhparent = 'reserve.audit_logs'::regclass order by 1`;
    const [{ months }] = await db.sql`select (extract(year from age(date_trunc('month', current_date), date_trunc('month', min(occurred_at)))) * 12
                                          + extract(month from age(date_trunc('month', current_date), date_trunc('month', min(occurred_at)))))::int + 4 as months
                                   from reserve.audit_logs where row_id <> 'far-future'`;
    expect(parts.filter((p) => p.relname !== "audit_logs_default")).toHaveLength(months);
    expect(parts.find((p) => p.relname === "audit_logs_default")?.n).toBe(1);
    // the identity goes on after the last id; the trail's writers still write
    const [fresh] = await db.sql`insert into reserve.audit_logs (actor, action, table_name) values ('after', 'INSERT', 'payments') returning id`;
    expect(BigInt(fresh.id)).toBeGreaterThan(BigInt(before.audit.max_id));
    // the view is back, with its comment and grant
    const [view] = await db.sql`select obj_description('reserve.audit_probe'::regclass, 'pg_class') as note,
                                    has_table_privilege('service_role', 'reserve.audit_probe', 'select') as granted,
                                    (select count(*)::int from reserve.audit_probe
                                     where id <= ${before.audit.max_id}::bigint or id = ${fresh.id}::bigint) as n`;
    expect(view).toEqual({ note: "a view over audit_logs, to be carried over", granted: true, n: before.audit.n + 1 });
    // the keys hold occurred_at; every partition is private like its table
    const [{ pk }] = await db.sql`select pg_get_constraintdef(oid) as pk from pg_constraint where conname = 'audit_logs_pkey'`;
    expect(pk).toBe("PRIMARY KEY (id, occurred_at)");
    const open = await db.sql`select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
                           where i.inhparent in ('reserve.audit_logs'::regclass, 'reserve.audit_logs_archive'::regclass)
                             and (not c.relrowsecurity or has_table_privilege('anon', c.oid, 'select'))`;
    expect(open).toEqual([]);
  });
});

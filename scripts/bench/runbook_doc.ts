// npm run bench:runbook-doc — every ```sql block of docs/RUNBOOK.md on a year of a busy platform (the
// database `npm run seed:large` built in .data-large), run as tests/runbook/docs_runbook.test.ts runs it
// (tests/helpers/runbook_doc.ts: a rolled-back transaction, the repairs and the 4-eyes steps as an
// operator's login role, maintenance outside a transaction, templates filled with the ids of rows
// buildWorld commits first). Each block runs RUNS times and each of its statements is timed; the table
// gives median and best, and every plain SELECT / WITH over 100 ms median gets its plan (EXPLAIN ANALYZE,
// BUFFERS, run in its block's place) in <dir>/explain/doc_<line>_<n>.txt.
//
// The cluster starts as bench:runbook starts it and is prepared the same way (pending migrations, the
// seed's stays stamped, one run_integrity_audit and one verify_recent_writes, the checks' watermark six
// minutes before the newest payment), so the checks read what the minute schedule leaves them. The
// blocks that commit (VACUUM, CALL retention_cleanup_job, CREATE INDEX CONCURRENTLY) run after all the
// others, so what they change is measured by nobody else; an index a block creates is dropped after each
// run. It writes to the database: run it on a copy.
//
//   RESERVE_LARGE_DIR=/path/to/copy npm run bench:runbook-doc
//   env: RUNS (default 3), RESERVE_LARGE_DIR (.data-large), STATEMENT_TIMEOUT_MS (120000)
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { migrate, projectRoot } from "../../local/migrate.ts";
import { datasetSizes, setChecksWindow, stampSeededStays, startYearDataset } from "./year_dataset.ts";
import { operatorRoles } from "../../tests/helpers/operator_roles.ts";
import {
  type Block, buildWorld, callsCorrection, codeBlocks, fill, missingRelations, OUTSIDE_TRANSACTION, RUNBOOK_PATH, runBlock, type World,
} from "../../tests/helpers/runbook_doc.ts";

const runs = Number(process.env.RUNS ?? 3);
const dir = path.resolve(projectRoot, process.env.RESERVE_LARGE_DIR ?? ".data-large");
const timeoutMs = Number(process.env.STATEMENT_TIMEOUT_MS ?? 120_000);
const SLOW_MS = 100;
const log = (m: string) => process.stderr.write(`${m}\n`);
const machine = () =>
  `${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const oneLine = (s: string, n = 70) => {
  const t = s.replace(/\s+/g, " ").trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
};

interface Timed {
  block: Block;
  /** 1-based among the statements the block runs */
  n: number;
  text: string;
  times: number[];
  /** how a run of it ended, when it did not succeed: "timeout" or "<SQLSTATE> <message>" */
  error?: string;
}

/** A plain read: its plan can be taken with EXPLAIN ANALYZE in its place. */
const explainable = (s: string) => /^\s*(select|with)\b/i.test(s);

/** The indexes a block creates (CREATE INDEX CONCURRENTLY name ON reserve.t): dropped after each run. */
const createdIndexes = (text: string) =>
  [...text.matchAll(/create\s+index\s+concurrently\s+(?:if\s+not\s+exists\s+)?(\w+)\s+on\s+(\w+)\./gi)].map((m) => `${m[2]}.${m[1]}`);

async function main() {
  const startedOn = machine();
  log(`start: ${startedOn}`);
  const { pg, url } = await startYearDataset(dir);
  const closers: (() => Promise<unknown>)[] = [];
  try {
    // the owner, for the preparation and the world: no statement timeout (the world reads whole views)
    const admin = postgres(url, { max: 1, onnotice: () => {} });
    closers.push(() => admin.end());
    const tm = performance.now();
    const applied = await migrate(url, { includeAll: true, timeoutMs: 3_600_000 });
    const migrateS = (performance.now() - tm) / 1000;
    if (applied.applied.length) log(`applied ${applied.applied.join(", ")} in ${migrateS.toFixed(1)} s`);

    // as bench:runbook: the seed's stays stamped as the nights_changed_at trigger would have, the hourly
    // audit run once, the minute check once, and the checks' watermark six minutes before the newest payment
    const stamped = await stampSeededStays(admin);
    if (stamped) log(`stamped nights_changed_at on ${stamped} seeded stays`);
    await admin`analyze`;
    const ta = performance.now();
    await admin`select id from reserve.run_integrity_audit()`;
    const auditS = (performance.now() - ta) / 1000;
    log(`run_integrity_audit: ${auditS.toFixed(1)} s`);
    const [verified] = await admin`select id from reserve.verify_recent_writes()`;
    const win = await setChecksWindow(admin, verified.id, 6);
    const sizes = await datasetSizes(admin);

    // the operators of the 4-eyes steps, as the test makes them; the approver runs blocks, so it has the timeout
    const ops = await operatorRoles(admin, url, ["proposer", "approver"]);
    closers.unshift(() => ops.drop());
    await admin.unsafe(`alter role "${ops.name("approver")}" set statement_timeout = ${timeoutMs}`);
    const tw = performance.now();
    const world: World = await buildWorld(admin, ops);
    const worldS = (performance.now() - tw) / 1000;
    log(`buildWorld: ${worldS.toFixed(1)} s`);

    const sql = postgres(url, { max: 1, onnotice: () => {}, connection: { statement_timeout: timeoutMs } });
    closers.unshift(() => sql.end());

    const blocks = codeBlocks(readFileSync(RUNBOOK_PATH, "utf8")).filter((b) => b.lang === "sql");
    const timed = new Map<string, Timed>();
    const failures: string[] = [];
    const skipped: string[] = [];
    const key = (b: Block, n: number) => `${b.line}#${n}`;
    const isSlow = (t: Timed) => (t.times.length ? median(t.times) > SLOW_MS : true);
    const dropCreatedIndexes = async (b: Block) => {
      for (const ix of createdIndexes(fill(b.text, world.values))) await admin.unsafe(`drop index if exists ${ix}`);
    };

    const timeBlock = async (b: Block) => {
      const missing = await missingRelations(sql, b);
      if (missing.length) {
        skipped.push(`${b.line} ${b.section}: ${missing.join(", ")} not installed`);
        return;
      }
      for (let r = 0; r < runs; r++) {
        try {
          await runBlock(b, {
            sql, ops, world,
            async exec(q, s, n) {
              const t = timed.get(key(b, n)) ?? { block: b, n, text: s, times: [] };
              timed.set(key(b, n), t);
              const t0 = performance.now();
              try {
                await q.unsafe(s);
              } catch (err) {
                const e = err as { code?: string; message?: string };
                t.error = e.code === "57014" ? `timeout (${timeoutMs} ms)` : `${e.code ?? ""} ${e.message ?? String(err)}`.trim();
                throw err;
              }
              t.times.push(performance.now() - t0);
            },
          });
        } catch (err) {
          failures.push(`run ${r + 1} of ${(err as Error).message.split("\n")[0]}`);
          log(`FAILED ${(err as Error).message.split("\n")[0]}`);
          break; // a timeout three times over buys nothing
        } finally {
          await dropCreatedIndexes(b);
        }
      }
      const mine = [...timed.values()].filter((t) => t.block === b);
      log(`${b.line} ${b.section}: ${mine.map((t) => (t.times.length ? median(t.times).toFixed(1) : t.error ?? "-")).join(", ")} ms`);
    };

    // the plan of a slow read, taken in its place in its block. A function's plan is a Function Scan, so
    // auto_explain (sent to this client as LOG messages) adds the plans of the statements inside it; not
    // for the 4-eyes steps (an operator's role may not LOAD a module)
    await mkdir(path.join(dir, "explain"), { recursive: true });
    const plans = new Map<Timed, string>();
    const nested: string[] = [];
    const xsql = postgres(url, { max: 1, connection: { statement_timeout: timeoutMs },
                                 onnotice: (n) => { if (n.severity === "LOG") nested.push(n.message); } });
    closers.unshift(() => xsql.end());
    const explainStatement = async (t: Timed) => {
      const file = path.join(dir, "explain", `doc_${t.block.line}_${t.n}.txt`);
      try {
        await runBlock(t.block, {
          sql: xsql, ops, world,
          async exec(q, s, n) {
            if (n !== t.n) return q.unsafe(s);
            const inner = !callsCorrection(t.block.text) && t.times.length > 0;
            if (inner) {
              await q.unsafe(`load 'auto_explain'`);
              await q.unsafe(`select set_config('auto_explain.log_min_duration', '1', true), set_config('auto_explain.log_analyze', 'on', true),
                                     set_config('auto_explain.log_buffers', 'on', true), set_config('auto_explain.log_nested_statements', 'on', true),
                                     set_config('auto_explain.log_timing', 'on', true), set_config('client_min_messages', 'log', true)`);
            }
            nested.length = 0;
            // one that never finished gets the planner's estimate only
            const plan = await q.unsafe(`explain ${t.times.length ? "(analyze, buffers) " : ""}${s}`);
            const inside = nested.splice(0).filter((m) => !m.includes(`Query Text: explain `));
            if (inner) await q.unsafe(`select set_config('client_min_messages', 'notice', true), set_config('auto_explain.log_min_duration', '-1', true)`);
            await writeFile(file, `-- docs/RUNBOOK.md:${t.block.line} (${t.block.section}), statement ${t.n}\n${s}\n\n` +
              `${plan.map((p) => p["QUERY PLAN"]).join("\n")}\n` +
              (inside.length ? `\n-- the statements inside it over 1 ms (auto_explain), in the order they finished:\n\n${inside.join("\n\n")}\n` : ""));
          },
        });
        plans.set(t, file);
      } catch (err) {
        plans.set(t, `no plan: ${(err as Error).message.split("\n")[0]}`);
      } finally {
        await dropCreatedIndexes(t.block);
      }
    };

    // the blocks that commit go last, so what they change (the retention backlog gone, fresh statistics)
    // reaches no other block's timing or plan; each group's plans are taken right after its timings
    const commits = (b: Block) => OUTSIDE_TRANSACTION.test(fill(b.text, world.values));
    for (const group of [blocks.filter((b) => !commits(b)), blocks.filter(commits)]) {
      for (const b of group) await timeBlock(b);
      for (const t of [...timed.values()].filter((x) => group.includes(x.block) && isSlow(x) && explainable(x.text))) await explainStatement(t);
    }
    const rows = [...timed.values()].sort((a, b) => a.block.line - b.block.line || a.n - b.n);
    const slow = rows.filter(isSlow);

    const cell = (t: Timed) => (t.times.length ? median(t.times).toFixed(1) : t.error ?? "-");
    const table = rows.map((t) => {
      const med = t.times.length ? median(t.times) : Infinity;
      const runsMs = t.times.map((x) => x.toFixed(1)).join(" / ") + (t.error ? `${t.times.length ? " / " : ""}${t.error}` : "");
      return `| ${t.block.line} | ${t.block.section} | ${t.n} | \`${oneLine(t.text).replace(/\|/g, "\\|")}\` | ${cell(t)} | ${t.times.length ? Math.min(...t.times).toFixed(1) : "-"} | ${runsMs} | ${med > SLOW_MS ? "**> 100**" : ""} |`;
    });
    console.log(`
## bench:runbook-doc (${new Date().toISOString()})
start: ${startedOn}
end:   ${machine()}
${blocks.length} sql blocks of docs/RUNBOOK.md, ${rows.length} statements timed, ${runs} runs each (no warm-up); statement_timeout ${timeoutMs} ms
data: ${sizes.payments} payments, ${sizes.ledger_entries} ledger entries, ${sizes.nights} calendar nights, ${sizes.audit} audit rows, ${sizes.webhooks} webhooks; ${sizes.size}
migrations applied: ${applied.applied.length ? `${applied.applied.join(", ")} in ${migrateS.toFixed(1)} s` : "none"}; run_integrity_audit ${auditS.toFixed(1)} s; checks read since ${win.verified_through.toISOString()}
buildWorld (the templates' rows, committed): ${worldS.toFixed(1)} s
plans: ${path.join(dir, "explain")}

| line | section | # | statement | median ms | best ms | runs ms | |
| --- | --- | --- | --- | --- | --- | --- | --- |
${table.join("\n")}

over ${SLOW_MS} ms median (or failed): ${slow.length}
${slow.map((t) => `- docs/RUNBOOK.md:${t.block.line} (${t.block.section}) #${t.n}: ${cell(t)} ms — ${oneLine(t.text, 120)}${plans.has(t) ? `\n  plan: ${plans.get(t)}` : explainable(t.text) ? "" : "\n  plan: not a plain SELECT / WITH, none taken"}`).join("\n")}
${failures.length ? `\nfailures:\n${failures.map((f) => `- ${f}`).join("\n")}` : ""}${skipped.length ? `\nskipped:\n${skipped.map((s) => `- ${s}`).join("\n")}` : ""}`);
  } finally {
    for (const close of closers) await close().catch((err) => log(`closing: ${(err as Error).message}`));
    await pg.stop();
  }
}

await main();

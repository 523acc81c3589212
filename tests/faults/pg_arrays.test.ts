// The functions' client runs without postgres.js's start-up type fetch (its dropped promise ended the
// process when a backend was terminated during it; see supabase/functions/_shared/db.ts). The array
// types it declares instead must make every array it sends and reads identical to what the fetched
// types gave: checked against a stock client, on what the server received and on what came back.
import fc from "fast-check";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ARRAY_OF, builtinArrayTypes } from "../../supabase/functions/_shared/pg_arrays.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

let db: TestDatabase;
let stock: postgres.Sql;
let ours: postgres.Sql;
const sent: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  stock = postgres(db.url, { max: 2, onnotice: () => {} });
  ours = postgres(db.url, {
    max: 2, onnotice: () => {}, fetch_types: false, types: builtinArrayTypes() as never,
    debug: (_connection, query) => void sent.push(query),
  });
  Object.assign((ours.options as unknown as { shared: { typeArrayMap: Record<number, number> } }).shared.typeArrayMap, ARRAY_OF);
});
afterAll(async () => {
  await stock?.end();
  await ours?.end();
  await db?.drop();
});

/**
 * What the server made of the parameter (its own text form) and what the client read back; or the
 * SQLSTATE it refused it with (postgres.js types an array of booleans or dates by its first element,
 * with or without the fetch: sql.array is the way to send those).
 */
async function roundTrip(sql: postgres.Sql, type: string, value: unknown, asArray: boolean) {
  try {
    const param = asArray ? sql.array(value as never[]) : value;
    const [row] = await sql`select ${param as never}::${sql.unsafe(type)}::text as received, ${param as never}::${sql.unsafe(type)} as back`;
    return row;
  } catch (err) {
    return { refused: (err as { code?: string }).code };
  }
}

async function same(type: string, value: unknown, asArray = false): Promise<void> {
  const a = await roundTrip(stock, type, value, asArray);
  const b = await roundTrip(ours, type, value, asArray);
  expect(b, `${type} ${JSON.stringify(value)}`).toEqual(a);
}

// PostgreSQL text cannot hold NUL; everything else, quotes, backslashes, braces, commas and "NULL" included
const text = fc.string({ unit: fc.oneof(fc.constantFrom('"', "\\", "{", "}", ",", " ", "N", "U", "L"), fc.string({ unit: "binary", minLength: 1, maxLength: 1 })) })
  .filter((s) => !s.includes("\u0000"));
const runs = { numRuns: 60 };

describe("arrays without the type fetch are the arrays postgres.js sent and read with it", () => {
  it("does not fetch types on connect", async () => {
    const fresh = postgres(db.url, { max: 1, fetch_types: false, debug: (_c, q) => void sent.push(q) });
    await fresh`select 1`;
    await fresh.end();
    await ours`select 1`;
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.filter((q) => /pg_catalog\.pg_type/.test(q))).toEqual([]);
  });

  it("uuid[], as poll_payment_status sends payment_ids (and null)", async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.uuid(), { maxLength: 5 }), (ids) => same("uuid[]", ids)), runs);
    const ids = [crypto.randomUUID(), crypto.randomUUID()];
    const [row] = await ours`select ${ids}::uuid[] as a, ${null}::uuid[] as b, array_length(${ids}::uuid[], 1) as n`;
    expect(row).toEqual({ a: ids, b: null, n: 2 });
  });

  it("text[] with every awkward character, null elements and nested arrays", async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.option(text, { nil: null }), { maxLength: 6 }), (xs) => same("text[]", xs)), runs);
    await fc.assert(fc.asyncProperty(fc.array(fc.array(text, { minLength: 2, maxLength: 2 }), { minLength: 1, maxLength: 3 }),
      (xs) => same("text[]", xs)), runs);
    await same("text[]", []);
    await same("varchar[]", ["a,b", 'q"uote', "back\\slash", "NULL"]);
  });

  it("numbers, booleans, dates and JSON", async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.integer(), { maxLength: 6 }), (xs) => same("int4[]", xs)), runs);
    await fc.assert(fc.asyncProperty(fc.array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String), { maxLength: 4 }),
      (xs) => same("int8[]", xs)), runs);
    await fc.assert(fc.asyncProperty(fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { maxLength: 4 }),
      (xs) => same("float8[]", xs)), runs);
    const dates = fc.array(fc.date({ min: new Date("1970-01-01"), max: new Date("2100-01-01"), noInvalidDate: true }), { minLength: 1, maxLength: 4 });
    for (const asArray of [false, true]) {
      await fc.assert(fc.asyncProperty(fc.array(fc.boolean(), { minLength: 1, maxLength: 4 }), (xs) => same("bool[]", xs, asArray)), runs);
      await fc.assert(fc.asyncProperty(dates, (xs) => same("timestamptz[]", xs, asArray)), runs);
    }
    expect(await roundTrip(ours, "bool[]", [true, false], true)).toEqual({ received: "{t,f}", back: [true, false] });
    await fc.assert(fc.asyncProperty(fc.array(fc.jsonValue().filter((v) => !JSON.stringify(v).includes("\\u0000")), { maxLength: 3 }),
      (xs) => same("jsonb[]", xs)), runs);
    await same("numeric[]", ["1.50", "-0.001", "123456789012345678901234567890"]);
    await same("date[]", ["2026-12-03", "2027-01-01"]);
  });

  it("arrays read from columns, and sql.array(values)", async () => {
    const q = "select array['a', null, 'c\"d']::text[] as t, array[1, 2]::int4[] as i, array[true, false] as b, " +
      "array['{\"k\": 1}'::jsonb] as j, array[now()::date] as d, '{}'::uuid[] as e, array[array[1, 2], array[3, 4]] as m";
    const [a] = await stock.unsafe(q);
    const [b] = await ours.unsafe(q);
    expect(b).toEqual(a);
    const [x] = await stock`select ${stock.array(["x", "y,z"])} as v, ${stock.array([1, 2])} as n`;
    const [y] = await ours`select ${ours.array(["x", "y,z"])} as v, ${ours.array([1, 2])} as n`;
    expect(y).toEqual(x);
  });
});

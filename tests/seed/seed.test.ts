// supabase/seed.sql builds the small world once, and running it again changes nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSeed } from "../../local/migrate.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

let db: TestDatabase;
beforeAll(async () => { db = await createTestDatabase(); });
afterAll(async () => await db?.drop());

const world = async () => (await db.sql`
  select (select array_agg(code order by code) from reserve.cities) as cities,
         (select count(*)::int from reserve.properties_map) as properties,
         (select array_agg(distinct unit_type order by unit_type) from reserve.unit_map) as unit_types,
         (select count(*)::int from reserve.availability_calendar) as nights,
         (select count(*)::int from reserve.availability_calendar where is_blocked) as blocked,
         (select min(date) = current_date and max(date) = current_date + 364 from reserve.availability_calendar) as a_year_from_today,
         (select count(*)::int from reserve.audit_logs) as audit_rows`)[0];

describe("seed.sql", () => {
  it("builds four cities, studio to villa, a year of nights with some blocked", async () => {
    await loadSeed(db.url);
    expect(await world()).toMatchObject({
      cities: ["FLN", "RIO", "SAO", "SSA"],
      properties: 5,
      unit_types: ["apartment", "house", "loft", "room", "studio", "villa"],
      nights: 8 * 365,
      blocked: 14,
      a_year_from_today: true,
    });
    // the settings and alert rules a later migration added are audited as the migrating user; the seed's as seed
    const [{ actor }] = await db.sql`select distinct actor from reserve.audit_trail where table_name not in ('settings', 'alert_rules')`;
    expect(actor).toBe("seed");
  });

  it("is idempotent", async () => {
    const before = await world();
    await loadSeed(db.url);
    expect(await world()).toEqual(before);
  });
});

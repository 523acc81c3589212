// npm run bench:start — seconds from `npm start` to the first 200 from health, cold (empty data dir)
// and warm (same data), over a few runs. Uses free ports and a temporary data dir.
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { cpus } from "node:os";
import path from "node:path";
import { projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { tempClusterDir } from "../../local/postgres.ts";

const runs = Number(process.env.RUNS ?? 3);

async function timeToHealthy(dataDir: string, dbPort: number, fnPort: number): Promise<number> {
  const started = performance.now();
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
    cwd: projectRoot,
    env: { ...process.env, DATABASE_URL: "", RESERVE_DATA_DIR: dataDir, RESERVE_DB_PORT: String(dbPort), RESERVE_FUNCTIONS_PORT: String(fnPort) },
    stdio: "ignore",
  });
  const exited = new Promise((r) => child.once("exit", r));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`npm start exited ${child.exitCode}`);
      const ok = await fetch(`http://127.0.0.1:${fnPort}/functions/v1/health`).then((r) => r.status === 200, () => false);
      if (ok) return (performance.now() - started) / 1000;
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    child.kill("SIGINT");
    await exited;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cold: number[] = [];
const warm: number[] = [];
for (let i = 0; i < runs; i++) {
  const dir = await tempClusterDir("reserve-bench-");
  const [dbPort, fnPort] = [await freePort(), await freePort()];
  cold.push(await timeToHealthy(dir, dbPort, fnPort));
  warm.push(await timeToHealthy(dir, dbPort, fnPort));
  await rm(dir, { recursive: true, force: true });
  console.log(`run ${i + 1}: cold ${cold[i].toFixed(2)} s, warm ${warm[i].toFixed(2)} s`);
}
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, node ${process.version}`);
console.log(`npm start -> first health 200: cold median ${median(cold).toFixed(2)} s (min ${Math.min(...cold).toFixed(2)}, max ${Math.max(...cold).toFixed(2)}), warm median ${median(warm).toFixed(2)} s`);

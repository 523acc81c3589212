// A second, private PostgreSQL for tests that stop or break the database on purpose.
import { rm } from "node:fs/promises";
import path from "node:path";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";

export interface PrivateCluster {
  port: number;
  url(database?: string): string;
  stop(): Promise<void>;
  restart(): Promise<void>;
  destroy(): Promise<void>;
}

export async function privateCluster(): Promise<PrivateCluster> {
  const dir = await tempClusterDir("reserve-cluster-");
  const port = await freePort();
  const opts = {
    dataDir: path.join(dir, "postgres"),
    port,
    logFile: path.join(dir, "postgres.log"),
    settings: { fsync: "off", synchronous_commit: "off" },
  };
  let pg = await startLocalPostgres(opts);
  return {
    port,
    url: (db?: string) => pg.url(db),
    stop: () => pg.stop(),
    async restart() {
      pg = await startLocalPostgres(opts);
    },
    async destroy() {
      await pg.stop().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}

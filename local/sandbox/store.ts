// The sandbox's memory across restarts: its secrets (written once, 0600) and a snapshot of every object,
// idempotency key, event and delivery, so a restarted sandbox is the same provider. Writes are debounced
// and atomic: the snapshot goes to a temporary file that is fsynced and renamed over the last one, so a
// crash mid-write leaves the previous snapshot whole; at most one write is in flight and a change during it
// schedules one more.
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { open, rename } from "node:fs/promises";
import path from "node:path";

const STATE_FILE = "state.json";
const SECRETS_FILE = "secrets.json";
const STATE_VERSION = 1;
const DEBOUNCE_MS = 50;

export interface SandboxSecrets {
  pagerdutyRoutingKey: string;
  slackWebhookPath: string;
  stripeSecretKey: string;
  stripeWebhookSecret: string;
  mercadopagoAccessToken: string;
  mercadopagoWebhookSecret: string;
  openpixAppId: string;
  openpixPrivateKeyPem: string;
  openpixPublicKeyPem: string;
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some filesystems cannot fsync a directory; the rename is still atomic
  }
}

/** Writes `data` to `file` so that a reader sees the old content or the new, never a part. */
function writeAtomicSync(file: string, data: string, mode = 0o644): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", mode);
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  fsyncDir(path.dirname(file));
}

export class StateStore {
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private closed = false;
  /** how many snapshots were written, and the last one's size: for tests and the log */
  writes = 0;
  lastBytes = 0;
  private lastWriteMs = 0;

  private constructor(readonly dir: string, private snapshot: () => unknown, private log: (line: string) => void) {}

  /** Opens (creating) `dir`, removing temporary files a crash left behind. */
  static open(dir: string, snapshot: () => unknown, log: (line: string) => void): StateStore {
    mkdirSync(dir, { recursive: true });
    for (const f of readdir(dir)) if (f.endsWith(".tmp")) rmSync(path.join(dir, f), { force: true });
    return new StateStore(dir, snapshot, log);
  }

  /** The secrets kept in `dir`, or those `make` returns, written there first. */
  static secrets(dir: string, make: () => SandboxSecrets): { secrets: SandboxSecrets; created: boolean } {
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, SECRETS_FILE);
    try {
      const kept = JSON.parse(readFileSync(file, "utf8")) as Partial<SandboxSecrets>;
      const fresh = make();
      const missing = (Object.keys(fresh) as (keyof SandboxSecrets)[]).filter((k) => !kept[k]);
      if (missing.length === 0) return { secrets: kept as SandboxSecrets, created: false };
      // a sandbox that learned new secrets since this directory was made keeps the old ones and adds the new
      const secrets = { ...fresh, ...kept } as SandboxSecrets;
      writeAtomicSync(file, JSON.stringify(secrets, null, 2), 0o600);
      return { secrets, created: false };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new Error(`unreadable sandbox secrets ${file}: ${(err as Error).message}`);
    }
    const secrets = make();
    writeAtomicSync(file, JSON.stringify(secrets, null, 2), 0o600);
    return { secrets, created: true };
  }

  /** The last snapshot written, or undefined on a first start. */
  load<T>(): T | undefined {
    const file = path.join(this.dir, STATE_FILE);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const parsed = JSON.parse(text) as { version: number; state: T };
    if (parsed.version !== STATE_VERSION) throw new Error(`sandbox state ${file} is version ${parsed.version}, this sandbox reads ${STATE_VERSION}`);
    return parsed.state;
  }

  markDirty(): void {
    if (this.closed) return;
    this.dirty = true;
    if (!this.timer && !this.writing) this.timer = setTimeout(() => this.kick(), this.delay());
  }

  /** A large state is written less often: writing takes at most about a fifth of the time. */
  private delay(): number {
    return Math.max(DEBOUNCE_MS, 4 * this.lastWriteMs);
  }

  private kick(): void {
    this.timer = undefined;
    if (!this.dirty || this.writing) return;
    this.writing = this.write().catch((err) => this.log(`[sandbox] state write failed: ${(err as Error).message}`)).finally(() => {
      this.writing = undefined;
      if (this.dirty && !this.closed) this.timer = setTimeout(() => this.kick(), this.delay());
    });
  }

  private async write(): Promise<void> {
    this.dirty = false;
    const started = performance.now();
    const data = JSON.stringify({ version: STATE_VERSION, savedAt: new Date().toISOString(), state: this.snapshot() });
    const file = path.join(this.dir, STATE_FILE);
    const tmp = `${file}.${process.pid}.${this.writes}.tmp`;
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    fsyncDir(this.dir);
    this.writes++;
    this.lastBytes = data.length;
    this.lastWriteMs = performance.now() - started;
  }

  /** Writes now whatever changed, and waits for it. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.writing) await this.writing;
    if (this.dirty) {
      this.writing = this.write().finally(() => (this.writing = undefined));
      await this.writing;
    }
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }
}

function readdir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

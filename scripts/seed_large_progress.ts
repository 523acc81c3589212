// One stderr line per phase, rewritten in place while the phase runs: phase, rows done/total, rows/s, ETA.
// Without a TTY (CI, a log file) each phase prints its line once, when it ends.

export interface PhaseTiming {
  phase: string;
  rows: number;
  ms: number;
}

const fmt = (n: number) => n.toLocaleString("en-US");

function duration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s - m * 60)).padStart(2, "0")}s`;
}

export class ProgressBar {
  private readonly tty: boolean;
  private lastDraw = 0;

  constructor(private readonly out: NodeJS.WriteStream | null = process.stderr) {
    this.tty = Boolean(out?.isTTY);
  }

  /** Starts a phase; the returned handle counts rows and ends the line. */
  phase(name: string, total: number): PhaseHandle {
    const started = Date.now();
    let done = 0;
    const line = (final: boolean) => {
      const s = (Date.now() - started) / 1000;
      const rate = s > 0 ? done / s : 0;
      const pct = total > 0 ? Math.min(100, (100 * done) / total) : 100;
      const width = 24;
      const fill = Math.round((pct / 100) * width);
      const bar = `[${"#".repeat(fill)}${".".repeat(width - fill)}]`;
      const tail = final
        ? `in ${duration(s)}`
        : `ETA ${rate > 0 ? duration((total - done) / rate) : "?"}`;
      return `${name.padEnd(22)} ${bar} ${fmt(done)}/${fmt(total)} rows  ${fmt(Math.round(rate))} rows/s  ${tail}`;
    };
    const draw = (force = false) => {
      if (!this.out || !this.tty) return;
      const now = Date.now();
      if (!force && now - this.lastDraw < 200) return;
      this.lastDraw = now;
      this.out.write(`\r\x1b[2K${line(false)}`);
    };
    draw(true);
    return {
      add: (rows: number) => {
        done += rows;
        draw();
      },
      end: (): PhaseTiming => {
        const ms = Date.now() - started;
        if (this.out) this.out.write(`${this.tty ? "\r\x1b[2K" : ""}${line(true)}\n`);
        return { phase: name, rows: done, ms };
      },
    };
  }
}

export interface PhaseHandle {
  add(rows: number): void;
  end(): PhaseTiming;
}

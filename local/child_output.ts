// Lines from a child process's output stream, whole (a chunk can end mid-line).
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";

export function eachLine(stream: Readable, onLine: (line: string) => void): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on("line", onLine);
}

/** `[name] line`, unless the child already prefixed the line with its name. */
export function prefixed(name: string, line: string): string {
  const tag = `[${name}]`;
  return line.startsWith(tag) ? line : `${tag} ${line}`;
}

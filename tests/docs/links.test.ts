// Every link of the repository's Markdown stays inside the repository and lands: the file exists (in a
// clone, not only on this machine) and the #anchor is a heading of it, slugged as GitHub does.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../local/migrate.ts";

const tracked = new Set(execFileSync("git", ["ls-files"], { cwd: projectRoot, encoding: "utf8" }).split("\n").filter(Boolean));
const untrackedDocs = ["docs", "."].flatMap((d) =>
  execFileSync("git", ["ls-files", "--others", "--exclude-standard", d], { cwd: projectRoot, encoding: "utf8" }).split("\n"))
  .filter((f) => f.endsWith(".md"));
const markdown = [...new Set([...tracked, ...untrackedDocs])].filter((f) => f.endsWith(".md") && !f.startsWith("node_modules/"));
const known = new Set([...tracked, ...untrackedDocs]);

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading.trim().toLowerCase()
    .replace(/`/g, "")
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

function anchors(md: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of md.split("\n")) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    const h = !fenced && line.match(/^#{1,6}\s+(.+?)\s*#*\s*$/);
    if (!h) continue;
    const base = slug(h[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n ? `${base}-${n}` : base);
  }
  return out;
}

function links(md: string): string[] {
  const code = md.replace(/```[\s\S]*?```/g, "").replace(/`[^`\n]*`/g, "");
  return [...code.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => m[1]);
}

describe("links in the repository's Markdown", () => {
  it("reads the documents", () => {
    expect(markdown).toEqual(expect.arrayContaining(["README.md", "docs/RUNBOOK.md", "docs/ARCHITECTURE.md"]));
  });

  for (const file of markdown) {
    it(`${file}: every link is relative, inside the repository, to a file and heading that exist`, () => {
      const text = readFileSync(path.join(projectRoot, file), "utf8");
      const broken: string[] = [];
      for (const link of links(text)) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(link) || link.startsWith("//")) {
          broken.push(`${link}: leaves the repository`);
          continue;
        }
        const [target, anchor] = link.split("#", 2);
        const resolved = target ? path.normalize(path.join(path.dirname(file), decodeURIComponent(target))) : file;
        if (resolved.startsWith("..") || path.isAbsolute(resolved)) {
          broken.push(`${link}: outside the repository`);
          continue;
        }
        const abs = path.join(projectRoot, resolved);
        const isDir = existsSync(abs) && statSync(abs).isDirectory();
        const inClone = isDir ? [...known].some((f) => f.startsWith(`${resolved.replace(/\/$/, "")}/`)) : known.has(resolved);
        if (!inClone) {
          broken.push(`${link}: ${resolved} is not in the repository`);
          continue;
        }
        if (anchor && !isDir) {
          if (!resolved.endsWith(".md")) continue;
          if (!anchors(readFileSync(abs, "utf8")).has(anchor)) broken.push(`${link}: no heading #${anchor} in ${resolved}`);
        }
      }
      expect(broken).toEqual([]);
    });
  }

  it("slugs headings as GitHub does", () => {
    expect(slug("P1: WEBHOOK DOWN (Stripe/PIX)")).toBe("p1-webhook-down-stripepix");
    expect(slug("A Stripe webhook from raw body to ledger row")).toBe("a-stripe-webhook-from-raw-body-to-ledger-row");
    expect(slug("The layout: what deploys, what is local")).toBe("the-layout-what-deploys-what-is-local");
    expect(slug("`webhook_stripe`")).toBe("webhook_stripe");
    expect(slug("1. Link the project")).toBe("1-link-the-project");
  });
});

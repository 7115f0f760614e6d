/**
 * Schema versions: today's server on a data directory written by the first
 * release (3337863, checked out at /work/wt/base or $SWITCHBOARD_BASE). That
 * release's own server writes the directory inside the test (its harness
 * starts it, its SDK enrolls two devices and queues messages for the offline
 * one); today's server then starts on it, migrates every file (after a
 * backup of each), and the offline device receives every queued message.
 * A file of a newer version, and a file that is not a database, stop the
 * start with a message naming the file.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, MAIN, startServer, waitFor } from "../helpers/harness.ts";
import type { KeyFile } from "../../src/client/keys.ts";

setDefaultTimeout(120_000); // bounds on waiting for subprocesses, not timing assertions

const BASE = process.env.SWITCHBOARD_BASE ?? "/work/wt/base";
const N = 25;

/** Every SQLite file of a data directory but the lock. */
function dbFiles(dir: string): string[] {
  const top = readdirSync(dir).filter((f) => f.endsWith(".db") && f !== "lock.db").map((f) => join(dir, f));
  const q = existsSync(join(dir, "queues")) ? readdirSync(join(dir, "queues")).filter((f) => f.endsWith(".db")).map((f) => join(dir, "queues", f)) : [];
  return [...top, ...q];
}
function version(path: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
  } finally {
    db.close();
  }
}

async function serveFails(dataDir: string): Promise<{ code: number; stderr: string }> {
  const p = Bun.spawn([BUN, MAIN, "serve", "--data-dir", dataDir, "--tcp-port", "0", "--tls-port", "0", "--http-port", "0"], { stdout: "ignore", stderr: "pipe" });
  const [stderr, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  return { code, stderr };
}

describe.skipIf(!existsSync(join(BASE, "test/helpers/harness.ts")))("a data directory written by 3337863", () => {
  let work: string;
  let dataDir: string;
  let bob: KeyFile;
  const sent: string[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "sb-migrate-"));
    dataDir = join(work, "data");
    // Runs under the old release's code: its harness, its server, its SDK.
    const writer = join(work, "old-writer.ts");
    writeFileSync(
      writer,
      `import { startServer } from ${JSON.stringify(join(BASE, "test/helpers/harness.ts"))};
const srv = await startServer({ dataDir: ${JSON.stringify(dataDir)} });
const alice = await srv.newDevice("alice");
const bob = await srv.newDevice("bob");
const a = await srv.client(alice);
const bodies = [];
for (let i = 0; i < ${N}; i++) {
  const text = "old message " + i;
  await a.send("bob", new TextEncoder().encode(text)); // resolves on sent: durable
  bodies.push(text);
}
a.close();
if ((await srv.stop()) !== 0) throw new Error("old server did not stop cleanly");
console.log(JSON.stringify({ bob, bodies }));
`,
    );
    const p = Bun.spawn([BUN, writer], { cwd: BASE, stdout: "pipe", stderr: "inherit" });
    const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    if (code !== 0) throw new Error(`the 3337863 writer failed (exit ${code}): ${out}`);
    const r = JSON.parse(out.trim().split("\n").pop()!) as { bob: KeyFile; bodies: string[] };
    bob = r.bob;
    sent.push(...r.bodies);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  test("its files carry no version; today's server migrates each (a backup first) and delivers every queued message", async () => {
    const files = dbFiles(dataDir);
    expect(files.map((f) => f.slice(dataDir.length + 1)).filter((f) => !f.startsWith("queues/")).sort()).toEqual(["accounts.db", "groups.db", "keys.db"]);
    expect(files.some((f) => f.includes("/queues/"))).toBe(true);
    for (const f of files) expect({ f, v: version(f) }).toEqual({ f, v: 0 });

    const srv = await startServer({ dataDir });
    try {
      for (const f of dbFiles(dataDir)) {
        expect({ f, v: version(f) }).toEqual({ f, v: f.includes("/queues/") ? 2 : 1 });
      }
      for (const f of files) expect({ f, backup: existsSync(`${f}.v0.bak`) }).toEqual({ f, backup: true });
      const got: string[] = [];
      const c = await srv.client(bob, { setup: (cl) => cl.on("message", (m) => got.push(new TextDecoder().decode(m.payload))) });
      await waitFor(() => got.length >= N, `${N} queued messages`);
      c.close();
      expect(got).toEqual(sent);
      // A backup is the file as it was: version 0, the messages still in it.
      const q = files.filter((f) => f.includes("/queues/"));
      let backedUp = 0;
      for (const f of q) {
        const db = new Database(`${f}.v0.bak`, { readonly: true });
        backedUp += (db.query("SELECT COUNT(*) AS n FROM items WHERE account = 'bob'").get() as { n: number }).n;
        expect((db.query("PRAGMA user_version").get() as { user_version: number }).user_version).toBe(0);
        db.close();
      }
      expect(backedUp).toBe(N);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
    // A second start finds every file current: no new backup, nothing to do.
    for (const f of files) rmSync(`${f}.v0.bak`);
    const again = await startServer({ dataDir });
    await again.http_get("/healthz"); // its signal handlers are in place once it serves
    expect(await again.stop()).toBe(0);
    for (const f of files) expect({ f, backup: existsSync(`${f}.v0.bak`) }).toEqual({ f, backup: false });
  });
});

describe("files the server cannot use", () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "sb-schema-"));
    const srv = await startServer({ dataDir });
    await srv.http_get("/healthz"); // its signal handlers are in place once it serves
    expect(await srv.stop()).toBe(0);
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  test("a file of a newer schema version: the start stops, naming the file and both versions; the file is untouched", async () => {
    const path = join(dataDir, "groups.db");
    const db = new Database(path);
    db.exec("PRAGMA user_version = 99");
    db.close();
    const r = await serveFails(dataDir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path} has schema version 99, newer than this server's 1: a newer switchboard wrote it`);
    expect(version(path)).toBe(99);
    const fix = new Database(path);
    fix.exec("PRAGMA user_version = 1");
    fix.close();
  });

  test("a file that is not a database: the start stops, naming the file and what to do", async () => {
    const path = join(dataDir, "keys.db");
    for (const side of ["-wal", "-shm"]) rmSync(path + side, { force: true });
    writeFileSync(path, "this is not a database, it is a text file that landed here ".repeat(100));
    const r = await serveFails(dataDir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path} is damaged`);
    expect(r.stderr).toContain("switchboard restore DIR");
  });
});

/**
 * `switchboard backup` under load and `switchboard restore`: senders keep
 * sending to offline recipients while the backup runs; the server is then
 * stopped, its data directory restored from the backup, and every message
 * acknowledged (`sent`) before the backup began is delivered from the
 * restored directory. Restore refuses while the server runs, and refuses an
 * incomplete backup.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, MAIN, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";

setDefaultTimeout(120_000); // bounds on waiting for subprocesses, not timing assertions

let work: string;
let srv: TestServer;

async function sb(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn([BUN, MAIN, ...args], { stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sb-backup-"));
  srv = await startServer();
});
afterAll(() => {
  srv.cleanup();
  rmSync(work, { recursive: true, force: true });
});

test("a backup under load holds every message acknowledged before it began; restore puts it back", async () => {
  const SENDERS = 4;
  const senders: SwitchboardClient[] = [];
  const recipients: KeyFile[] = [];
  for (let i = 0; i < SENDERS; i++) {
    senders.push(await srv.client(await srv.newDevice(`s${i}`)));
    recipients.push(await srv.newDevice(`r${i}`)); // offline: everything queues
  }
  /** Text -> when its `sent` came (ms, performance.now). */
  const acked = new Map<string, number>();
  let stop = false;
  let n = 0;
  const loops = senders.map(async (c, i) => {
    while (!stop) {
      const text = `m${i}-${n++}`;
      await c.send(`r${i}`, new TextEncoder().encode(text));
      acked.set(text, performance.now());
    }
  });
  await waitFor(() => acked.size >= 200, "200 messages acknowledged before the backup");
  const began = performance.now();
  const before = [...acked].filter(([, t]) => t < began).map(([k]) => k);
  const dest = join(work, "b1");
  const r = await sb(["backup", dest, "--data-dir", srv.dataDir]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^backed up .* into .*: \d+ databases and \d+ other files, \d+ bytes, in \d+ ms$/m);
  const ended = performance.now();
  await waitFor(() => [...acked.values()].some((t) => t > ended), "a message acknowledged after the backup");
  stop = true;
  await Promise.all(loops);
  const during = acked.size - before.length;
  const after = [...acked].filter(([, t]) => t > ended).map(([k]) => k);
  for (const c of senders) c.close();
  console.log(`backup under load: ${before.length} acknowledged before it, ${during} during or after it`);

  const files = readdirSync(dest);
  expect(files).toContain("backup.json");
  expect(files).toContain("accounts.db");
  expect(files.filter((f) => /-(wal|shm)$|^lock\./.test(f))).toEqual([]);

  // Restore refuses while the server runs: the data directory's lock is held.
  const refused = await sb(["restore", dest, "--data-dir", srv.dataDir]);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toContain(`is in use by another switchboard server (pid ${srv.proc.pid}): stop it before restoring`);

  await srv.http_get("/healthz");
  expect(await srv.stop()).toBe(0);
  const restored = await sb(["restore", dest, "--data-dir", srv.dataDir]);
  expect(restored.stderr).toBe("");
  expect(restored.code).toBe(0);
  expect(restored.stdout).toContain(`into ${srv.dataDir}`);
  const aside = readdirSync(srv.dataDir).filter((f) => f.startsWith("pre-restore-"));
  expect(aside.length).toBe(1);
  expect(existsSync(join(srv.dataDir, aside[0]!, "accounts.db"))).toBe(true);

  await srv.restart();
  const got = new Set<string>();
  const readers: SwitchboardClient[] = [];
  for (const kf of recipients) readers.push(await srv.client(kf, { setup: (cl) => cl.on("message", (m) => got.add(new TextDecoder().decode(m.payload))) }));
  // (Not "until the queues are empty": the recipients' delivery receipts queue for the senders, offline now.)
  await waitFor(() => before.every((t) => got.has(t)), `the ${before.length} messages acknowledged before the backup`, 60_000);
  for (const c of readers) c.close();
  expect(before.filter((t) => !got.has(t))).toEqual([]);
  // What was acknowledged after the backup ended cannot be in it: the restore replaced the files, it did not add to them.
  expect(after.filter((t) => got.has(t))).toEqual([]);
});

test("restore refuses a backup without its manifest, and one with a damaged database", async () => {
  const dest = join(work, "b2");
  const dataDir = join(work, "d2");
  const s = await startServer({ dataDir });
  await s.http_get("/healthz");
  expect((await sb(["backup", dest, "--data-dir", dataDir])).code).toBe(0);
  expect(await s.stop()).toBe(0);
  rmSync(join(dest, "backup.json"));
  const r = await sb(["restore", dest, "--data-dir", dataDir]);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("is not a complete backup (no backup.json");

  const dest3 = join(work, "b3");
  expect((await sb(["backup", dest3, "--data-dir", dataDir])).code).toBe(0);
  // Damage a page of accounts.db past its header.
  const db = new Database(join(dest3, "accounts.db"));
  const pages = (db.query("PRAGMA page_count").get() as { page_count: number }).page_count;
  db.close();
  const f = Bun.file(join(dest3, "accounts.db"));
  const bytes = new Uint8Array(await f.arrayBuffer());
  for (let i = 4096 + 8; i < Math.min(bytes.length, 4096 * pages); i += 7) bytes[i] = 0xa5;
  await Bun.write(join(dest3, "accounts.db"), bytes);
  const d = await sb(["restore", dest3, "--data-dir", dataDir]);
  expect(d.code).toBe(1);
  expect(d.stderr).toMatch(/accounts\.db is (damaged|not a database)|malformed/);
  rmSync(dataDir, { recursive: true, force: true });
});

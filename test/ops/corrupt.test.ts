/**
 * Issue 17, a broken file at start: a real server process refuses to start
 * on a data directory with a damaged database, with a message that names the
 * file and says what to do, and touches nothing. Two kinds of damage:
 * - a queue shard overwritten with garbage bytes (seeded; the seed is in the
 *   failure message);
 * - a queue shard written by a real server, cut to half its length (a copy
 *   cut short: SQLite itself reads such a file fine until a query reaches a
 *   missing page, so the start checks the length against the header).
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, MAIN, startServer } from "../helpers/harness.ts";
import { prng } from "../helpers/prng.ts";

setDefaultTimeout(60_000); // a bound on waiting for processes

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function serve(dataDir: string): Promise<{ code: number; stderr: string }> {
  const p = Bun.spawn([BUN, MAIN, "serve", "--data-dir", dataDir, "--tcp-port", "0", "--tls-port", "-1", "--http-port", "0", "--canary-interval", "0"], { stdout: "ignore", stderr: "pipe" });
  const [stderr, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  return { code, stderr };
}

/** A data directory a real server wrote: bob (offline) has `n` messages of 2 KB queued; stopped cleanly (no WAL left). */
async function written(n: number): Promise<{ dataDir: string; shard: string }> {
  const srv = await startServer({ args: ["--canary-interval", "0"] });
  dirs.push(srv.dataDir);
  const alice = await srv.client(await srv.newDevice("alice"));
  await srv.newDevice("bob");
  for (let i = 0; i < n; i++) await alice.send("bob", `${i} ${"y".repeat(2000)}`);
  await alice.close();
  expect(await srv.stop()).toBe(0);
  const q = join(srv.dataDir, "queues");
  const shard = readdirSync(q)
    .filter((f) => f.endsWith(".db"))
    .map((f) => join(q, f))
    .sort((a, b) => statSync(b).size - statSync(a).size)[0]!; // bob's: the largest
  return { dataDir: srv.dataDir, shard };
}

test("a shard of garbage bytes: the start stops, naming the file and what to do; the file is untouched", async () => {
  const { dataDir, shard } = await written(3);
  const seed = Date.now() % 1_000_000;
  const rnd = prng(seed);
  const garbage = new Uint8Array(8192).map(() => Math.floor(rnd() * 256));
  writeFileSync(shard, garbage);
  const r = await serve(dataDir);
  expect({ seed, code: r.code }).toEqual({ seed, code: 1 });
  expect(r.stderr).toContain(`${shard} is damaged`);
  expect(r.stderr).toContain("Restore the data directory from a backup (switchboard restore DIR), or move this file aside to start it empty (its data is lost)");
  expect(new Uint8Array(readFileSync(shard))).toEqual(garbage);
});

test("a real shard cut to half its length: the start stops, naming the file, its length and its header's", async () => {
  const { dataDir, shard } = await written(40);
  const size = statSync(shard).size;
  expect(size).toBeGreaterThan(80 * 1024); // 40 messages of 2 KB: many pages, so half of it loses some
  truncateSync(shard, Math.floor(size / 2 / 4096) * 4096);
  const r = await serve(dataDir);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`${shard} is damaged (the file has ${Math.floor(size / 2 / 4096) * 4096} bytes, its header says `);
  expect(r.stderr).toContain("it is truncated");
  expect(r.stderr).toContain("Restore the data directory from a backup (switchboard restore DIR)");
  expect(statSync(shard).size).toBe(Math.floor(size / 2 / 4096) * 4096);
});

/**
 * The dedup state a data directory holds and what it costs the next start (issue 20 target 5):
 * - `files`: bytes of the queue shard files (`.db`, `-wal`, `-shm`), read with stat before anything opens them;
 * - `rows` of the acceptance records (`accepted`: records of clients that do not confirm, kept for the retention;
 *   `unconfirmed`: confirming senders' records whose `sent` was not confirmed in time) and of queue `items`, with
 *   the bytes of each table and its index (dbstat, the pages they use);
 * - `starts`: --runs starts of a server on the directory, each timed from the spawn to its `listening` line, to
 *   /readyz answering 200 (its canary's first round trip went through) and to `switchboard_dedup_shards_loading`
 *   reaching 0 (the stored keys are loaded: queue-sqlite.ts loadKeys runs after the listen, a chunk per turn).
 *   Each is stopped with SIGTERM once ready and loaded. The first start finds the directory as it was left (after
 *   a kill -9: unchecked WAL files to recover); the later ones follow a clean stop.
 *
 *   bun tools/dedup-state.ts --data-dir DIR [--server-main PATH] [--runs 3] [--no-start]
 *
 * Run it on a stopped server's directory (after a load run with `--data-dir DIR`). With --no-start it only
 * reads (files, then rows), which is safe on a running server's directory too (WAL readers): the rows then come
 * before the starts would. The rows are counted after the starts otherwise, so that the first start is the
 * first to open the files. Prints one JSON line.
 */
import { Database } from "bun:sqlite";
import { readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const dir = arg("--data-dir");
if (!dir) {
  console.error("usage: bun tools/dedup-state.ts --data-dir DIR [--server-main PATH] [--runs N] [--no-start]");
  process.exit(2);
}
const main = resolve(arg("--server-main") ?? join(import.meta.dir, "../src/cli/main.ts"));
const runs = process.argv.includes("--no-start") ? 0 : Number(arg("--runs") ?? 3);
const queues = join(dir, "queues");
const TABLES = ["accepted", "unconfirmed", "items"] as const;

/** Bytes of the shard files by kind, from stat alone (opening a file could recover its WAL before the server does). */
function files(): Record<string, number> {
  const out: Record<string, number> = { db: 0, wal: 0, shm: 0, total: 0 };
  for (const f of readdirSync(queues)) {
    const kind = f.endsWith(".db") ? "db" : f.endsWith(".db-wal") ? "wal" : f.endsWith(".db-shm") ? "shm" : null;
    if (kind === null) continue;
    const n = statSync(join(queues, f)).size;
    out[kind]! += n;
    out.total! += n;
  }
  return out;
}

/** Rows of each table, and the bytes of the pages each table and its indexes use (dbstat). */
function rows(): { rows: Record<string, number>; table_bytes: Record<string, number> } {
  const count: Record<string, number> = Object.fromEntries(TABLES.map((t) => [t, 0]));
  const bytes: Record<string, number> = Object.fromEntries(TABLES.map((t) => [t, 0]));
  for (const f of readdirSync(queues).filter((f) => f.endsWith(".db"))) {
    const db = new Database(join(queues, f), { readonly: true });
    try {
      const idx = db.query("SELECT name, tbl_name AS t FROM sqlite_master WHERE type IN ('table', 'index')").all() as { name: string; t: string }[];
      const owner = new Map(idx.map((r) => [r.name, r.t]));
      for (const t of TABLES) if (owner.get(t) === t) count[t]! += (db.query(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n;
      for (const r of db.query("SELECT name, SUM(pgsize) AS n FROM dbstat GROUP BY name").all() as { name: string; n: number }[]) {
        const t = owner.get(r.name) ?? r.name;
        if (t in bytes) bytes[t]! += r.n;
      }
    } finally {
      db.close();
    }
  }
  return { rows: count, table_bytes: bytes };
}

async function get(url: string): Promise<Response | null> {
  try {
    return await fetch(url);
  } catch {
    return null;
  }
}

/** One start: ms from the spawn to listening, to /readyz 200, to no shard loading keys; then SIGTERM. */
async function start(): Promise<{ listening_ms: number; ready_ms: number; keys_loaded_ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn([process.execPath, main, "serve", "--data-dir", dir!, "--tcp-port", "0", "--tls-port", "-1", "--http-port", "0", "--log-level", "warn"], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited before listening (exit ${await p.exited})`);
    buf += new TextDecoder().decode(value);
  }
  const listening = performance.now() - t0;
  const http = (JSON.parse(buf.split("\n")[0]!) as { http: number }).http;
  let ready = -1;
  let loaded = -1;
  // Polled every 10 ms: the resolution of the two later figures.
  while (ready < 0 || loaded < 0) {
    if (p.exitCode !== null) throw new Error(`server exited while starting (exit ${p.exitCode})`);
    if (ready < 0 && (await get(`http://127.0.0.1:${http}/readyz`))?.status === 200) ready = performance.now() - t0;
    if (loaded < 0) {
      const m = await (await get(`http://127.0.0.1:${http}/metrics`))?.text();
      if (m !== undefined && /^switchboard_dedup_shards_loading 0$/m.test(m)) loaded = performance.now() - t0;
    }
    await Bun.sleep(10);
  }
  p.kill("SIGTERM");
  if ((await p.exited) !== 0) throw new Error(`server did not stop cleanly (exit ${p.exitCode})`);
  return { listening_ms: Math.round(listening), ready_ms: Math.round(ready), keys_loaded_ms: Math.round(loaded) };
}

const before = files();
const starts = [];
for (let i = 0; i < runs; i++) starts.push(await start());
const median = (xs: number[]) => (xs.length === 0 ? null : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!);
const later = starts.slice(1);
console.log(
  JSON.stringify({
    dataDir: dir,
    serverMain: main,
    files: before,
    ...rows(),
    starts,
    after_clean_stop_median: later.length === 0 ? null : { listening_ms: median(later.map((s) => s.listening_ms)), ready_ms: median(later.map((s) => s.ready_ms)), keys_loaded_ms: median(later.map((s) => s.keys_loaded_ms)) },
  }),
);

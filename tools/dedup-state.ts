/**
 * The dedup state a data directory holds and what it costs the next start (issue 20 target 5):
 * the acceptance records in the queue shard files (`accepted`: records kept for the retention;
 * `unconfirmed`: confirming senders' records whose `sent` was not confirmed in time), then the
 * wall time from spawning a server on the directory to its `listening` line, median of --runs.
 * Since the keys are loaded after the start (queue-sqlite.ts loadKeys; gauge switchboard_dedup_shards_loading),
 * that time no longer includes the scan of `accepted`; the scan runs after it, a chunk per turn.
 *
 *   bun tools/dedup-state.ts --data-dir DIR [--server-main PATH] [--runs 3]
 *
 * Run it on a stopped server's directory (after a load run with `--data-dir DIR`). The server is
 * started with its ports on 0 and stopped with SIGTERM after each start. Prints one JSON line.
 */
import { Database } from "bun:sqlite";
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const dir = arg("--data-dir");
if (!dir) {
  console.error("usage: bun tools/dedup-state.ts --data-dir DIR [--server-main PATH] [--runs N]");
  process.exit(2);
}
const main = resolve(arg("--server-main") ?? join(import.meta.dir, "../src/cli/main.ts"));
const runs = Number(arg("--runs") ?? 3);

function rows(): Record<string, number> {
  const out: Record<string, number> = { accepted: 0, unconfirmed: 0, items: 0 };
  const q = join(dir!, "queues");
  for (const f of readdirSync(q).filter((f) => f.endsWith(".db"))) {
    const db = new Database(join(q, f), { readonly: true });
    try {
      const tables = new Set((db.query("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name));
      for (const t of Object.keys(out)) if (tables.has(t)) out[t]! += (db.query(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n;
    } finally {
      db.close();
    }
  }
  return out;
}

async function startMs(): Promise<number> {
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
  const ms = performance.now() - t0;
  p.kill("SIGTERM");
  await p.exited;
  return ms;
}

const before = rows();
const times: number[] = [];
for (let i = 0; i < runs; i++) times.push(await startMs());
times.sort((a, b) => a - b);
console.log(JSON.stringify({ dataDir: dir, serverMain: main, rows: before, start_ms: times.map((t) => Math.round(t)), start_ms_median: Math.round(times[Math.floor(times.length / 2)]!) }));

/**
 * What push jobs add to the queue's group commit (src/store/push-sqlite.ts):
 * 50 commits of 1000 items (100 devices, 10 items each, 200-byte bodies) per
 * run, runs interleaved 7 times, medians of the commit time per item for:
 * no rider; the rider with every device online (the filter says no); every
 * device offline (one upsert per device per commit).
 *
 *   bun loadtest/push-commit-bench.ts [REPO_ROOT]   (another checkout's root for an A/B of two commits)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
const R = process.argv[2] ?? join(import.meta.dir, "..");
const { Metrics } = await import(`${R}/src/core/metrics.ts`);
const { SqliteDeliveryQueue } = await import(`${R}/src/store/queue-sqlite.ts`);
const { SqlitePushJobs } = await import(`${R}/src/store/push-sqlite.ts`);
const { ItemKind } = await import(`${R}/src/store/queue.ts`);
type Mode = "none" | "online" | "offline";
function run(mode: Mode): number {
  const dir = mkdtempSync(join(tmpdir(), "sb-pb-"));
  const q = new SqliteDeliveryQueue(dir, { shards: 1, commitMs: 1_000_000, commitRows: 1_000_000, durability: "process", committer: "inline" }, new Metrics()); // the statements' own cost, on this thread
  if (mode !== "none") {
    const j = new SqlitePushJobs(1);
    q.ride(j);
    j.setFilter(() => mode === "offline");
  }
  const body = new Uint8Array(200);
  let t = 0;
  for (let b = 0; b < 50; b++) {
    for (let i = 0; i < 1000; i++) {
      const acct = `u${i % 100}`; // 100 devices per batch, 10 items each
      q.append({ qid: q.nextQid(acct), account: acct, device: 1, kind: ItemKind.MESSAGE, fromAccount: "s", fromDevice: 1, conv: "s", cid: `c${b}-${i}`, seq: i, ts: Date.now(), body }, null);
    }
    const t0 = performance.now();
    q.flush();
    t += performance.now() - t0;
  }
  q.close();
  rmSync(dir, { recursive: true, force: true });
  return (t / 50000) * 1000; // µs per item
}
const res: Record<Mode, number[]> = { none: [], online: [], offline: [] };
for (let r = 0; r < 7; r++) for (const m of ["none", "online", "offline"] as Mode[]) res[m].push(run(m));
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
for (const m of ["none", "online", "offline"] as Mode[]) console.log(`${m}: median ${med(res[m]).toFixed(2)} µs of commit per item (7 interleaved rounds: ${res[m].map((x) => x.toFixed(2)).join(" ")})`);
console.log(JSON.stringify({ bench: "push-rider-commit", unit: "us_per_item", none: med(res.none), online: med(res.online), offline: med(res.offline) }));

/**
 * Peak RSS of the source node during one shard move: 20 x 900 000 bytes queued for an offline device of a shard of
 * n1 (18 MiB), moved to n2 at the default chunk size. The peak is reset (clear_refs 5) right before the move and
 * read (VmHWM) right after. With MOVE_RSS_ACCOUNTS=N, N more accounts of that shard (each with an enrollment
 * code) are written into n1's accounts.db first: rows, not items. Memory, one run:
 * `[MOVE_RSS_ACCOUNTS=20000] node_modules/.bin/bun test ./test/cluster/move-rss.ts` (not a test: it asserts only that
 * the move succeeded; CLUSTER.md "Moving shards" has the figures).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { accountOn, threeNodes } from "./three-nodes.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";

const { nodes, device, connect: client } = threeNodes(4000, ["--limits-max-frame", String(1 << 20)]);
const kb = (pid: number, k: string) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`${k}:\\s+(\\d+)`))![1]);

describe("rss", () => {
  test("peak RSS of the source during a move of 18 MiB", async () => {
    const r = accountOn("n1", "cb_");
    const s = accountOn("n3", "cs_");
    const [ks] = [await device(s), await device(r)];
    const cs = await client(ks, "n3");
    for (let k = 0; k < 20; k++) await cs.send(r, `c${k}:`.padEnd(900_000, "x"));
    const src = nodes.get("n1")!;
    const extra = Number(process.env.MOVE_RSS_ACCOUNTS ?? 0);
    if (extra > 0) {
      const store = new SqliteAccountStore(src.dataDir);
      for (let i = 0, n = 0; n < extra; i++) if (shardOf(`rss${i}`) === shardOf(r)) store.createAccount(`rss${i}`, 3600), n++;
      store.close();
    }
    const pid = src.proc.pid;
    Bun.gc?.(true);
    await Bun.sleep(2000);
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    const before = kb(pid, "VmRSS");
    const res = (await fetch(`http://127.0.0.1:${src.http}/cluster/move?shard=${shardOf(r)}&to=n2`, { method: "POST" }).then((x) => x.json())) as Record<string, unknown>;
    const peak = kb(pid, "VmHWM");
    console.log(`RSS ${JSON.stringify({ before_kib: before, peak_kib: peak, rise_kib: peak - before, res })}`);
    expect(res.ok).toBe(true);
  }, 240_000);
});

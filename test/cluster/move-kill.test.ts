/**
 * kill -9 in the middle of a shard move: 3 real `switchboard serve` processes and a private redis-server. An
 * account of n1 has 30 messages queued for its offline device; `POST /cluster/move` sends its shard to n2, and
 * after a seeded random delay (0–40 ms: before, during or after the shipment and the flip) the target, or the
 * source, is killed with -9 and restarted (same data dir). Whatever the interleaving:
 * - the shard ends with exactly one owner (the held sets of the three nodes cover 4096 shards, disjoint), which
 *   is where the device is redirected, through any node;
 * - nothing is lost and nothing doubled: the device gets the 30 messages once, in order, and 5 sent after the
 *   restart after them, with seqs that only grow.
 * The shipment goes in chunks of 1 KiB (cluster.move_chunk_bytes) and each message is 1 500 bytes, so it is 30
 * chunks, each durable on the target before the next, and the seeded kill point may fall between two of them (a
 * killed target gets the rest from the link's retry after its restart; the move's answer is printed). The flip
 * waits for the last chunk; what the first ones left on a target is replaced by the next attempt, or left unowned.
 * Randomized delays: the seed is printed in the test name (rerun with SB_SEED=...).
 */
import { describe, expect, test } from "bun:test";
import { accountOn, status, threeNodes } from "./three-nodes.ts";
import type { Sent } from "../../src/client/types.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor } from "../helpers/harness.ts";

const TTL = 4000;
const SEED = Number(process.env.SB_SEED ?? Date.now() % 1_000_000);
function rng(seed: number): () => number {
  let x = seed || 1;
  return () => ((x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}
const rand = rng(SEED);
const { nodes, device, connect: client } = threeNodes(TTL, ["--presence-stranger-receipts", "100000", "--cluster-move-chunk-bytes", "1024"]);
const text = (p: Uint8Array) => new TextDecoder().decode(p);
const msg = (k: number) => `q${k}`.padEnd(1500, ".");


/** Every shard held by exactly one node (sum 4096; the sets are disjoint by the leases: nodes.test.ts). */
async function oneOwnerEach(): Promise<void> {
  await waitFor(async () => {
    const st = await Promise.all([...nodes.values()].map(status));
    return st.reduce((n, x) => n + x.held, 0) === 4096 && st.every((x) => x.unowned === 0);
  }, "every shard held by one live node", 60_000);
}

describe(`kill -9 mid-move (seed ${SEED}; rerun with SB_SEED=${SEED})`, () => {
  for (const victim of ["n2", "n1"] as const) {
    test(`kill -9 of the ${victim === "n2" ? "target" : "source"} (${victim}) mid-move: one owner, nothing lost or doubled`, async () => {
      const r = accountOn("n1", `k${victim}r_`);
      const s = accountOn("n3", `k${victim}s_`);
      const [ks, kr] = [await device(s), await device(r)];
      const cs = await client(ks, "n3");
      const sent: Sent[] = [];
      for (let k = 0; k < 30; k++) sent.push(await cs.send(r, msg(k)));
      const src = nodes.get("n1")!;
      const move = fetch(`http://127.0.0.1:${src.http}/cluster/move?shard=${shardOf(r)}&to=n2`, { method: "POST" }).then((x) => x.json()).catch((e) => ({ ok: false, reason: String(e) }));
      await Bun.sleep(Math.floor(rand() * 40));
      await nodes.get(victim)!.kill9();
      await nodes.get(victim)!.restart();
      const res = await move;
      await oneOwnerEach();
      for (let k = 30; k < 35; k++) sent.push(await cs.send(r, msg(k)));
      const got: string[] = [];
      await client(kr, "n3", (c) => c.on("message", (m) => void got.push(text(m.payload))));
      await waitFor(() => got.length >= 35, `all 35 messages (have ${got.length}; move answered ${JSON.stringify(res)})`, 60_000);
      await Bun.sleep(500); // a duplicate would arrive right behind
      expect(got).toEqual(Array.from({ length: 35 }, (_, k) => msg(k)));
      for (let k = 1; k < 35; k++) expect(sent[k]!.seq).toBeGreaterThan(sent[k - 1]!.seq);
      console.log(`kill -9 of ${victim}: the move answered ${JSON.stringify(res)}`);
    }, 240_000);
  }
});

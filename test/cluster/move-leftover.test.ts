/**
 * A move's leftovers after a kill -9 of the mover past its flip (issue 12, CLUSTER.md "What remains" item 4): 3 real
 * `switchboard serve` processes and a private redis-server. A group homed on n1 has a member whose home shard n1
 * moves to n2. The mover waits between the snapshot and the flip (test hook SB_TEST_PAUSE_AT_FLIP, move.ts: it
 * writes the file and waits while it exists); meanwhile a group message is sent and gets its `sent`, so its copy for
 * the member is queued at n1 after the member's rows were shipped. Then n1 flips and is killed by its hook
 * (SB_TEST_KILL_AT=move-flipped) before its leftovers step. Before the fix that copy stayed in n1's queue for a shard
 * n1 no longer serves: an acknowledged message the member never got. Now n1's restart learns the flip from Redis
 * (the homes merge) and ships what it holds for the shard from the intent's note, drops the rows, then clears the
 * intent: the member gets the message once, from n2.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor } from "../helpers/harness.ts";
import { accountOn, homeOf, plan, status, threeNodes } from "./three-nodes.ts";

const { nodes, device, connect: client } = threeNodes(4000);
const text = (p: Uint8Array) => new TextDecoder().decode(p);

/** One value read from a SQLite file of a running node (read only; WAL lets it read beside the writer). */
function count(file: string, sql: string, ...args: string[]): number {
  const db = new Database(file, { readonly: true });
  try {
    return (db.query(sql).get(...args) as { n: number }).n;
  } finally {
    db.close();
  }
}

describe("a move's leftovers", () => {
  test("a group copy queued between the snapshot and the flip, the mover killed -9 past its flip: shipped at its restart, once", async () => {
    const m = accountOn("n1", "lo_m"); // the member whose shard moves
    const c = accountOn("n1", "lo_c"); // creates the group, on n1 (a group is homed on its creator's node)
    const a = accountOn("n3", "lo_a"); // the sender
    const [km, kc, ka] = [await device(m), await device(c), await device(a)];
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    const C = await client(kc, "n1");
    const { g } = await C.createGroup("leftover", [m, a]);
    await C.close();
    expect([homeOf(g), shardOf(g) === shardOf(m)]).toEqual(["n1", false]); // its copies for the member are made at n1
    const A = await client(ka, "n3");

    const mine = plan.shardsOf("n1").length;
    const pause = join(n1.dataDir, "pause-at-flip");
    await n1.kill9();
    await n1.restart(undefined, { SB_TEST_KILL_AT: "move-flipped", SB_TEST_PAUSE_AT_FLIP: pause });
    await waitFor(async () => (await status(n1)).held === mine, "n1 to hold its shards again", 60_000);
    const move = fetch(`http://127.0.0.1:${n1.http}/cluster/move?shard=${shardOf(m)}&to=n2`, { method: "POST" }).then((x) => x.json()).catch((e) => ({ ok: false, reason: String(e) }));
    await waitFor(() => existsSync(pause), "the mover to wait between its snapshot and its flip", 60_000);
    const sent = await A.sendGroup(g, "between"); // durable at n1 (the group's node), queued there for the member
    expect(sent.seq).toBeGreaterThan(0);
    rmSync(pause);
    expect(await n1.proc.exited).not.toBe(0); // killed by its hook, right after the flip
    expect(await move).toMatchObject({ ok: false });
    await waitFor(async () => (await status(n2)).held === plan.shardsOf("n2").length + 1, "n2 to hold the moved shard", 60_000);

    await n1.restart();
    const cluster = join(n1.dataDir, "cluster.db");
    await waitFor(() => count(cluster, "SELECT count(*) AS n FROM shard_moving") === 0, "n1's intent cleared once the leftovers went", 60_000);
    const got: string[] = [];
    await client(km, "n3", (c) => c.on("message", (x) => void got.push(text(x.payload))));
    await waitFor(() => got.length >= 1, "the group message at the member", 30_000);
    await Bun.sleep(500); // a duplicate would arrive right behind
    expect(got).toEqual(["between"]);
    // The rows went before the intent: n1 keeps nothing of the moved account, and does not take its shard again.
    expect(count(join(n1.dataDir, "accounts.db"), "SELECT count(*) AS n FROM accounts WHERE name = ?", m)).toBe(0);
    await waitFor(async () => (await status(n1)).held === mine - 1, "n1 to hold its shards but the moved one", 60_000);
  }, 240_000);
});

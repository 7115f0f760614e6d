/**
 * Group operations in flight while the group's shard moves: 3 real `switchboard serve` processes and a private
 * redis-server. A group homed on n1 (admin a on n1, admin b on n2, member c on n3) moves to n3, which is SIGSTOPped
 * first, so the move waits between its freeze and its flip (the target acks no chunk). Meanwhile b, through n2
 * (which routes the group to n1: it has not heard of any move), asks `group.info`, adds d, and sends a message;
 * a, on n1 itself, asks `group.info`. n1 holds the iqs (ShardMover.hold; counted, so the test knows they are
 * there), then n3 is let go. Proves: each iq gets its real answer once the move is over (from the new home,
 * through n1: an iq answered retry_after without `lost` reached the application as an error, and one done at n1
 * would have changed the shard's rows after they were shipped); GET /cluster and `cluster status` on n1 list the move
 * (shard, target, "shipping", since) while it waits; d is a member at the new home; the message
 * (retry_after while frozen, sent again by the SDK) reaches a and c once. No timing assertions.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, homeOf, plan, status, threeNodes } from "./three-nodes.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { BUN, MAIN, ROOT, waitFor } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";

const TTL = 20_000; // n3 stays "up" while stopped
const { nodes, device, connect } = threeNodes(TTL, ["--presence-stranger-receipts", "100000"]);
const client = (key: KeyFile, on?: (c: SwitchboardClient) => void) => connect(key, homeOf(key.account), on);
const text = (p: Uint8Array) => new TextDecoder().decode(p);

describe("group operations during a move of the group's shard", () => {
  test("iqs sent to the old home during the move get their real answers; a message sent then arrives once", async () => {
    const [n1, n3] = [nodes.get("n1")!, nodes.get("n3")!];
    const [a, b, c, d] = [accountOn("n1", "ma_"), accountOn("n2", "mb_"), accountOn("n3", "mc_"), accountOn("n2", "md_")];
    const [ka, kb, kc] = [await device(a), await device(b), await device(c)];
    await device(d);
    const got: Record<string, string[]> = { a: [], c: [] };
    const A = await client(ka, (x) => x.on("message", (m) => void got.a!.push(text(m.payload))));
    const B = await client(kb);
    const C = await client(kc, (x) => x.on("message", (m) => void got.c!.push(text(m.payload))));
    const { g } = await A.createGroup("moving ops", [b, c]);
    expect(plan.ownerOf(shardOf(g))).toBe("n1");
    await A.promote(g, [b]);
    expect((await B.groupInfo(g)).members.length).toBe(3); // b's iqs go n2 -> n1
    const held = () => n1.metric("switchboard_cluster_ops_held_total");
    const before = await held();
    n3.proc.kill("SIGSTOP");
    let move: Promise<Record<string, unknown>> | null = null;
    try {
      move = fetch(`http://127.0.0.1:${n1.http}/cluster/move?shard=${shardOf(g)}&to=n3`, { method: "POST" }).then((x) => x.json() as Promise<Record<string, unknown>>);
      // Frozen: its first chunk sent to the stopped n3 and not acked.
      await waitFor(async () => (await n1.metric("switchboard_cluster_link_lag_batches", `{peer="n3"}`)) > 0, "n1 shipping to the stopped n3", 30_000);
      // GET /cluster and `cluster status` on n1 show the move: its shard, target and state, since when.
      const st = (await (await fetch(`http://127.0.0.1:${n1.http}/cluster`)).json()) as { moves: { shard: number; target: string; since: number; state: string }[] };
      expect(st.moves).toEqual([{ shard: shardOf(g), target: "n3", since: expect.any(Number), state: "shipping" }]);
      expect(Date.now() - st.moves[0]!.since).toBeGreaterThanOrEqual(0);
      const p = Bun.spawn([BUN, MAIN, "cluster", "status", "--http-port", String(n1.http)], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
      const out = await new Response(p.stdout).text();
      await p.exited;
      expect(out).toMatch(new RegExp(`^moving shard ${shardOf(g)} to n3: shipping, since \\d{4}-\\d\\d-\\d\\dT`, "m"));
      const answers: Record<string, string> = {};
      const note = (k: string, p: Promise<unknown>) => p.then((r) => void (answers[k] = JSON.stringify(r)), (e) => void (answers[k] = `error ${e.code ?? e}: ${e.message}`));
      const bInfo = note("b info", B.groupInfo(g).then((i) => i.members.map((m) => m.u).sort()));
      const bAdd = note("b add", B.addMembers(g, [d]).then(() => "added"));
      const aInfo = note("a info", A.groupInfo(g).then((i) => i.members.length));
      const sent = B.sendGroup(g, "during the move");
      await waitFor(async () => (await held()) >= before + 3, "n1 holding the three iqs for the move", 30_000);
      expect(answers).toEqual({}); // none answered while the shard is frozen
      n3.proc.kill("SIGCONT");
      expect(await move).toMatchObject({ ok: true, shards: 1 });
      expect((await status(n1)).moves).toEqual([]); // the move is over: its intent cleared with the outcome
      await Promise.all([bInfo, bAdd, aInfo]);
      expect(answers).toEqual({ "b info": JSON.stringify([a, b, c].sort()), "b add": JSON.stringify("added"), "a info": "3" });
      await sent;
    } finally {
      n3.proc.kill("SIGCONT");
    }
    // The group now lives on n3, with d added there.
    expect((await C.groupInfo(g)).members.map((m) => m.u).sort()).toEqual([a, b, c, d].sort());
    await waitFor(() => got.a!.includes("during the move") && got.c!.includes("during the move"), "the message sent during the move", 30_000);
    await Bun.sleep(500); // a duplicate would arrive right behind
    expect([got.a!.filter((x) => x === "during the move").length, got.c!.filter((x) => x === "during the move").length]).toEqual([1, 1]);
  }, 180_000);
});

/**
 * A device's push limits move with its shard, and a stage that falls due during the move goes out once: 3 real
 * `switchboard serve` processes, a private redis-server and one local webhook gateway (as move-push.test.ts).
 * - Limits: an offline device of n1 gets its silent wake-up from n1 (its silent interval, 20 min, starts), logs in
 *   and leaves again; its shard moves to n2; a second message there opens a fresh job whose silent stage n2 holds
 *   back (counted `rate-limited`), so the gateway saw one silent push. Without the limits in the shipment n2 started
 *   the device with a full budget and sent a second silent one (checked by mutation).
 * - During the move: the visible stage of a job falls due while its shard is frozen for a move (the target SIGSTOPped,
 *   so the move waits before its flip): neither home sends it then; the new home sends it once after the flip.
 *   Without the ownership check (PushService.owns) the old home sent it during the freeze and the new one again.
 * No timing assertions: conditions are polled with generous bounds (the SIGSTOP lasts past the stage's due time).
 */
import { describe, expect, test } from "bun:test";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor, type TestServer } from "../helpers/harness.ts";
import { accountOn, threeNodes } from "./three-nodes.ts";
import { delivered, startGateway, webhookArgs, wokenOn } from "../push/gateway.ts";

const ESCALATE_S = 3;
const gw = await startGateway();
// A TTL well above the SIGSTOP below, so the stopped target keeps its leases.
const t = threeNodes(10_000, webhookArgs(gw.fake.url + "/hook", { "escalate-after": ESCALATE_S, "timeout-ms": 3000 }));
const { nodes, connect: client } = t;

/** Pushes of this result counted by a node (0 before the first). */
async function pushes(n: TestServer, result: string): Promise<number> {
  const { text } = await n.http_get("/metrics");
  return text.split("\n").filter((l) => l.startsWith("switchboard_push_total{") && l.includes(`result="${result}"`)).reduce((s, l) => s + Number(l.split(" ").pop()), 0);
}
const idle = async () => {
  for (const n of nodes.values()) await waitFor(async () => (await n.metric("switchboard_push_in_flight")) === 0, "no push in flight");
};
const move = (from: TestServer, account: string, to: string) =>
  fetch(`http://127.0.0.1:${from.http}/cluster/move?shard=${shardOf(account)}&to=${to}`, { method: "POST" }).then((x) => x.json() as Promise<{ ok: boolean }>);

describe("push across a shard move", () => {
  test("a moved device keeps its silent interval: the new home holds the next silent push back", async () => {
    const r = accountOn("n1", "pl_");
    const { tok, kr, cs } = await wokenOn(t, gw, r, "n1", accountOn("n3", "pm_"), "n3", "one");
    await idle();
    await (await client(kr, "n1")).close(); // awake: its job closes (the limits stay)
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    expect(await move(n1, r, "n2")).toMatchObject({ ok: true, shards: 1 });
    await cs.send(r, "two");
    await waitFor(async () => (await pushes(n2, "rate-limited")) > 0 || gw.to(tok).length > 1, "n2 to hold the silent push back, or send it", 60_000);
    await idle();
    expect(gw.to(tok).map((b) => b.urgency)).toEqual(["silent"]);
    expect(await pushes(n2, "rate-limited")).toBeGreaterThan(0);
    expect(await delivered(n2)).toBe(0);
  }, 120_000);

  test("a stage due while its shard is frozen for a move goes out once, from the new home after the flip", async () => {
    const r = accountOn("n1", "pd_");
    const { tok } = await wokenOn(t, gw, r, "n1", accountOn("n3", "pe_"), "n3", "wake up");
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    // The gateway having the silent push is not n1 having counted it: n1 counts it delivered when it reads the 204,
    // in its own process, later (seen: n1's count read one short here, then [2, 1] against [1, 1] at the end).
    // No push in flight on any node means every answer so far is counted.
    await idle();
    const before = [await delivered(n1), await delivered(n2)];
    n2.proc.kill("SIGSTOP");
    let moved: Promise<{ ok: boolean }>;
    try {
      moved = move(n1, r, "n2");
      await Bun.sleep((ESCALATE_S + 2) * 1000); // the visible stage falls due meanwhile; the move waits for n2's ack
    } finally {
      n2.proc.kill("SIGCONT");
    }
    expect(await moved).toMatchObject({ ok: true, shards: 1 });
    await waitFor(() => gw.to(tok).length >= 2, "the visible wake-up", 60_000);
    await idle();
    await Bun.sleep(500); // a duplicate would arrive right behind
    expect(gw.to(tok).map((b) => b.urgency)).toEqual(["silent", "alert"]);
    expect([await delivered(n1), await delivered(n2)]).toEqual([before[0]!, before[1]! + 1]);
  }, 120_000);
});

process.on("beforeExit", () => void gw.close());

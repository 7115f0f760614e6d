/**
 * A pending push job moves with its shard: 3 real `switchboard serve` processes, a private redis-server and one
 * local webhook gateway (every node configured with it), as test/push/cluster.test.ts. An offline device of n1 with
 * a webhook endpoint gets a message: n1 sends its silent wake-up, and its job waits for the visible stage
 * (push.escalate_after 3 s). Its shard then moves to n2 (`POST /cluster/move`). Proves: the visible wake-up comes
 * from n2, exactly once, as the next stage of the same job (its request id has the job's id), and no second silent
 * one (without the jobs in the shipment the moved items opened a fresh job at n2, whose first stage is silent again:
 * checked by mutation); n1 sends nothing more and keeps no job.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor } from "../helpers/harness.ts";
import { accountOn, threeNodes } from "./three-nodes.ts";
import { delivered, startGateway, webhookArgs, wokenOn } from "../push/gateway.ts";

const gw = await startGateway();
const t = threeNodes(4000, webhookArgs(gw.fake.url + "/hook", { "escalate-after": 3, "timeout-ms": 3000 }));
const { nodes } = t;

const idle = async () => {
  for (const n of nodes.values()) await waitFor(async () => (await n.metric("switchboard_push_in_flight")) === 0, "no push in flight");
};

describe("push jobs move with their shard", () => {
  test("the silent wake-up from the old home, the visible one from the new home, each once", async () => {
    const r = accountOn("n1", "mp_");
    const { tok } = await wokenOn(t, gw, r, "n1", accountOn("n3", "mq_"), "n3", "wake up");
    await idle();
    expect(gw.to(tok)[0]!.urgency).toBe("silent");
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    expect(await delivered(n1)).toBe(1);
    const res = await fetch(`http://127.0.0.1:${n1.http}/cluster/move?shard=${shardOf(r)}&to=n2`, { method: "POST" }).then((x) => x.json());
    expect(res).toMatchObject({ ok: true, shards: 1 });
    await waitFor(() => gw.to(tok).length >= 2, "the visible wake-up", 60_000);
    await idle();
    await Bun.sleep(500); // a duplicate would arrive right behind
    const got = gw.to(tok);
    expect(got.map((b) => b.urgency)).toEqual(["silent", "alert"]);
    const job = (id: string) => id.slice(0, id.lastIndexOf("."));
    expect(job(got[1]!.id)).toBe(job(got[0]!.id)); // the same job, at its next stage
    expect(await delivered(n1)).toBe(1);
    expect(await delivered(n2)).toBe(1);
    expect(await delivered(nodes.get("n3")!)).toBe(0);
    expect(await n1.metric("switchboard_push_jobs_open")).toBe(0);
  }, 120_000);
});

process.on("beforeExit", () => void gw.close());

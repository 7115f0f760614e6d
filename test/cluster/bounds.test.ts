/**
 * Queue bounds of a recipient homed on another node, decided by its home (cluster/bounds.ts): 3 real
 * `switchboard serve` processes and a private redis-server, queue.max_messages 5. Proves:
 * - a sender on n1 fills the queue of an offline device homed on n2; once n2's notice is in (n2's link to n1 has
 *   nothing unacknowledged), the next send is refused with `queue_full` naming that device, nothing accepted;
 * - a sender on n3 is refused the same way (every peer is told);
 * - a group on n1 with that device's account as a member does not queue its copy and tells the sender
 *   (`rcpt full`), as on one node;
 * - the device drains: its home says it has room again and a send passes; the device got every accepted message
 *   once, in order, and none of the refused ones (nor the group copy).
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, homeOf, threeNodes } from "./three-nodes.ts";
import { ServerError, SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";
import type { Receipt } from "../../src/client/types.ts";
import { waitFor } from "../helpers/harness.ts";

const TTL = 4000;
const MAX = 5;
const { nodes, clients, device } = threeNodes(TTL, ["--queue-max-messages", String(MAX)]);

async function client(key: KeyFile, on: (c: SwitchboardClient) => void = () => {}): Promise<SwitchboardClient> {
  const c = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get(homeOf(key.account))!.tcp, key });
  clients.push(c);
  on(c);
  await c.connect();
  return c;
}
const text = (p: Uint8Array) => new TextDecoder().decode(p);

describe("queue bounds of a remote recipient, at its home", () => {
  test("a full device on n2 refuses sends from n1 and n3 with queue_full; once it drained, sends pass again", async () => {
    const [s, s3, r] = [accountOn("n1", "bs_"), accountOn("n3", "bt_"), accountOn("n2", "br_")];
    const [ks, ks3, kr] = [await device(s), await device(s3), await device(r)];
    const S = await client(ks);
    const S3 = await client(ks3);
    for (let i = 0; i < MAX; i++) await S.send(r, `m${i}`); // r is offline: all 5 wait on n2
    // n2 said so as the 5th was queued; once its link to n1 has nothing unacknowledged, n1 has the notice.
    const n2 = nodes.get("n2")!;
    await waitFor(async () => (await n2.metric("switchboard_cluster_link_lag_batches", '{peer="n1"}')) === 0, "n2's link to n1 acknowledged", 30_000);
    const refused = async (c: SwitchboardClient, body: string) => {
      const e = await c.send(r, body).then(() => null, (x) => x as ServerError);
      expect(e).toBeInstanceOf(ServerError);
      expect(e!.code).toBe(ErrorCode.QUEUE_FULL);
      expect(e!.detail).toEqual({ full: { [r]: [kr.device] } });
    };
    await refused(S, "over the bound");
    await waitFor(async () => (await n2.metric("switchboard_cluster_link_lag_batches", '{peer="n3"}')) === 0, "n2's link to n3 acknowledged", 30_000);
    await refused(S3, "over the bound from n3");
    // A group on n1 with r as a member: its fan-out on n1 counts r's device full too (not queued, `rcpt full`).
    const fulls: Receipt[] = [];
    S.on("receipt", (x: Receipt) => void (x.kind === "full" && fulls.push(x)));
    const { g } = await S.createGroup("bounded", [r]);
    const gs = await S.sendGroup(g, "group copy over the bound");
    await waitFor(() => fulls.length >= 1, "a full receipt for r's device", 30_000);
    expect(fulls.map((x) => [x.account, x.device, x.seq, x.id])).toEqual([[r, kr.device, gs.seq, gs.id]]);
    // The device connects and drains; its home then says it has room, and a send passes.
    const got: string[] = [];
    await client(kr, (c) => c.on("message", (m) => got.push(text(m.payload))));
    await waitFor(() => got.length >= MAX, "r to drain its queue", 30_000);
    let passed = false;
    await waitFor(async () => {
      passed = await S.send(r, "after the drain").then(() => true, (e) => {
        if ((e as ServerError).code !== ErrorCode.QUEUE_FULL) throw e;
        return false;
      });
      return passed;
    }, "a send to pass once r drained", 30_000);
    await waitFor(() => got.length >= MAX + 1, "the message after the drain", 30_000);
    expect(got).toEqual([...Array.from({ length: MAX }, (_, i) => `m${i}`), "after the drain"]);
  }, 120_000);
});

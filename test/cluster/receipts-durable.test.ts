/**
 * Receipts and events over the node links (`d` items) are durable on the account's home before the link acks
 * them: 3 real `switchboard serve` processes and a private redis-server, and this test process as one more link
 * sender, speaking for peer n2 with the nodes' own LinkSender and item format (forward.ts `d`). Being the sender
 * itself is what lets it kill the home at once when the ack arrives, the moment a too-early ack would lose the
 * item; long group commits (queue.commit_ms 1000) keep such an item in memory for a while after it. Proves:
 * - kill -9 of the home right after its ack of two receipts: after the restart both are queued (the recipients
 *   were offline throughout), so nothing acked was lost;
 * - the same item sent again after that restart (as a sender that never saw the ack resends it) is acked and
 *   not queued a second time: the home's acceptance record keyed by the item's key answers it (`recall`);
 * - a real `read` receipt from a reader on n2 still reaches the sender on n1 (the home's path, not the test's).
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, allHeld, homeOf, status, threeNodes } from "./three-nodes.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { Receipt } from "../../src/client/types.ts";
import { LinkSender } from "../../src/core/cluster/link.ts";
import { ItemKind } from "../../src/core/delivery.ts";
import { encodeBody } from "../../src/protocol/codec.ts";
import { waitFor } from "../helpers/harness.ts";

const TTL = 4000;
const { nodes, clients, device, args } = threeNodes(TTL, ["--queue-commit-ms", "1000"]);

async function client(key: KeyFile, receipts: Receipt[]): Promise<SwitchboardClient> {
  const c = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get(homeOf(key.account))!.tcp, key });
  clients.push(c);
  c.on("receipt", (r: Receipt) => void receipts.push(r));
  await c.connect();
  return c;
}

/** A link to n1 as peer n2 would open it, at n1's link port now. */
async function linkToN1(): Promise<LinkSender> {
  const st = await status(nodes.get("n2")!);
  const n1 = st.nodes.find((n: { id: string }) => n.id === "n1");
  const port = n1.linkPort as number;
  return new LinkSender("n2", () => ({ host: "127.0.0.1", port }));
}

/** A `read` receipt by `reader` (device 1) up to `seq`, for every device of `to`: the `d` item n2 would send. */
function readReceipt(to: string, reader: string, seq: number): Uint8Array {
  const ts = Date.now();
  return encodeBody({
    k: "d", a: to, x: 0,
    m: { kind: ItemKind.RECEIPT, fromAccount: reader, fromDevice: 1, cid: "", seq, ts },
    s: { t: "rcpt", q: 0, k: "read", u: reader, d: 1, w: reader, seq, ts },
  });
}

describe("d items durable before the link ack", () => {
  test("kill -9 of the home right after the ack loses no receipt; a resend after the restart is not queued twice", async () => {
    const [s1, s2] = [accountOn("n1", "rs1_"), accountOn("n1", "rs2_")];
    const reader = accountOn("n2", "rr_");
    const [k1, k2] = [await device(s1), await device(s2)];
    await device(reader);
    const boot = crypto.randomUUID().slice(0, 8);
    const [key1, key2] = [`d\u0000n2\u0000${boot}\u00001`, `d\u0000n2\u0000${boot}\u00002`];
    const link = await linkToN1();
    // One batch (one turn); both recipients offline, so the receipts can only be in n1's store.
    await Promise.all([link.send(key1, readReceipt(s1, reader, 7)), link.send(key2, readReceipt(s2, reader, 9))]);
    await nodes.get("n1")!.kill9();
    link.close();
    await nodes.get("n1")!.restart(args("n1"));
    await allHeld(nodes);
    // The second item again, as a sender that lost the ack resends it: to a fresh process, which has only its store.
    const again = await linkToN1();
    await again.send(key2, readReceipt(s2, reader, 9));
    // A later item (new key) for s2 marks the end of what it gets.
    await again.send(`d\u0000n2\u0000${boot}\u00003`, readReceipt(s2, reader, 11));
    again.close();
    // Raw connections: every queued item is pushed as it is (the SDK would drop a repeated receipt).
    const [c1, c2] = [await nodes.get("n1")!.raw(), await nodes.get("n1")!.raw()];
    await c1.login(k1);
    await c2.login(k2);
    const reads = (c: typeof c1) => c.received.flatMap((x) => (x.t === "rcpt" ? [[x.k, x.u, x.seq]] : []));
    await waitFor(() => reads(c1).length >= 1 && reads(c2).some((r) => r[2] === 11), "the receipts queued on n1 before and after its restart", 30_000);
    expect(reads(c1)).toEqual([["read", reader, 7]]);
    expect(reads(c2)).toEqual([["read", reader, 9], ["read", reader, 11]]);
    c1.end();
    c2.end();
  }, 120_000);

  test("a read receipt from a reader on n2 reaches the sender on n1", async () => {
    const [s, r] = [accountOn("n1", "rps_"), accountOn("n2", "rpr_")];
    const [ks, kr] = [await device(s), await device(r)];
    const got: Receipt[] = [];
    const S = await client(ks, got);
    const R = await client(kr, []);
    const sent = await S.send(r, "read me");
    R.markRead(s, sent.seq);
    await waitFor(() => got.some((x) => x.kind === "read"), "the read receipt on n1", 30_000);
    expect(got.filter((x) => x.kind === "read").map((x) => [x.account, x.seq])).toEqual([[r, sent.seq]]);
  }, 60_000);
});

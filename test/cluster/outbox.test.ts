/**
 * The per-peer outbox (src/store/outbox.ts, link.ts `durable`): a `d` item made on a node (here a `read`
 * receipt of a reader on n2 for a sender on n1) survives that node's kill -9 before the peer's ack. 3 real
 * `switchboard serve` processes and a private redis-server. The peer n1 is SIGSTOPped so that it cannot ack;
 * the item is then on n2's disk (the test reads n2's outbox file); n2 is killed with -9, then n1 too, and both
 * restart: the restarted n2 sends the item again from its outbox, n1 queues it, and the sender gets the
 * receipt, after which n2's outbox is empty. Without the outbox the receipt is lost (nothing resends a `read`),
 * so the test fails (checked by mutation). A group message's copies for a member node that is down are kept
 * in the group's node's outbox and `sent` goes out without that node; the group's node killed with -9 after
 * it, both restarted: the member gets the message once. No timing assertions: conditions are polled.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { accountOn, allHeld, homeOf, threeNodes } from "./three-nodes.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { Message, Receipt } from "../../src/client/types.ts";
import { SqlitePeerOutbox } from "../../src/store/outbox.ts";
import { waitFor } from "../helpers/harness.ts";

const TTL = 4000;
const { nodes, device, args, connect } = threeNodes(TTL);

/** A client of `key` on its home, collecting its receipts and messages. */
const client = (key: KeyFile, receipts: Receipt[], msgs: Message[] = []): Promise<SwitchboardClient> =>
  connect(key, homeOf(key.account), (c) => {
    c.on("receipt", (r: Receipt) => void receipts.push(r));
    c.on("message", (m: Message) => void msgs.push(m));
  });

/** Rows n2 keeps for n1, read from its file (another connection to the same WAL database). */
function keptForN1(): number {
  const o = new SqlitePeerOutbox(join(nodes.get("n2")!.dataDir, "outbox.db"));
  try {
    return o.count("n1");
  } finally {
    o.close();
  }
}

describe("the per-peer outbox", () => {
  test("a read receipt made on n2 survives kill -9 of n2 (and then of n1) before n1's ack", async () => {
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    const sender = accountOn("n1", "os_");
    const reader = accountOn("n2", "or_");
    const [ks, kr] = [await device(sender), await device(reader)];
    const gotS: Receipt[] = [];
    const S = await client(ks, gotS);
    const got: Message[] = [];
    const R = await client(kr, [], got);
    const sent = await S.send(reader, "read me");
    await waitFor(() => got.length === 1 && gotS.some((r) => r.kind === "dlv"), "the message at the reader, its dlv back", 30_000);
    // The dlv was acked by n1: nothing kept. Polled: n1 sends the ack to n2 and the dlv to S at once, and n2 removes the
    // row after the ack, in the link's next iteration, so S can see the dlv before (failed once so, 13:01 UTC).
    await waitFor(() => keptForN1() === 0, "n2's outbox empty once n1 acked the dlv", 30_000);
    n1.proc.kill("SIGSTOP");
    try {
      R.markRead(sender, sent.seq);
      await waitFor(() => keptForN1() > 0, "n2 to keep the read receipt for n1", 30_000);
      await n2.kill9();
      await n1.kill9();
    } finally {
      n1.proc.kill("SIGCONT");
    }
    await n1.restart(args("n1"));
    await n2.restart(args("n2"));
    await allHeld(nodes);
    await S.close();
    gotS.length = 0;
    await client(ks, gotS); // the restarted n1 listens on new ports
    await waitFor(() => gotS.some((r) => r.kind === "read" && r.seq === sent.seq), "the read receipt at the sender after both restarts", 60_000);
    await waitFor(() => keptForN1() === 0, "n2's outbox empty once n1 acked", 30_000);
    expect(gotS.filter((r) => r.kind === "read").length).toBe(1);
  }, 180_000);

  test("a group message's sent does not wait for a member node that is down; kill -9 of the group's node after it, the member gets it once", async () => {
    const [n1, n2] = [nodes.get("n1")!, nodes.get("n2")!];
    const admin = accountOn("n1", "oga_");
    const far = accountOn("n2", "ogf_"); // its node goes down
    const near = accountOn("n3", "ogn_");
    const [ka, kf, kn] = [await device(admin), await device(far), await device(near)];
    const A = await client(ka, []);
    const gotNear: Message[] = [];
    await client(kn, [], gotNear);
    const { g } = await A.createGroup("outbox", [far, near]);
    await A.sendGroup(g, "before"); // every member's devices known on n1 now
    await waitFor(() => gotNear.length === 1, "the first message at the near member", 30_000);
    await n2.kill9();
    const sent = await A.sendGroup(g, "while n2 is down"); // before the outbox this waited for n2
    expect(sent.seq).toBeGreaterThan(0);
    await waitFor(() => gotNear.length === 2, "the second message at the near member", 30_000);
    // The group's node dies with the copies for n2 in its outbox only; both come back.
    await n1.kill9();
    await n1.restart(args("n1"));
    await n2.restart(args("n2"));
    await allHeld(nodes);
    const gotFar: Message[] = [];
    await client(kf, [], gotFar);
    await waitFor(() => gotFar.some((m) => new TextDecoder().decode(m.payload) === "while n2 is down"), "the message at the far member after both restarts", 60_000);
    const texts = gotFar.map((m) => new TextDecoder().decode(m.payload));
    expect(texts).toEqual(["before", "while n2 is down"]); // once each, in order
    await waitFor(async () => {
      const o = new SqlitePeerOutbox(join(n1.dataDir, "outbox.db"));
      try {
        return o.count("n2") === 0;
      } finally {
        o.close();
      }
    }, "n1's outbox empty once n2 acked", 30_000);
  }, 180_000);
});

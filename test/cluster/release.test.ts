/**
 * Records of what a node link brought (forward.ts `m` copies and `d` receipts, DeliveryQueue.begin "peer", link.ts
 * `lb.f` / `lf`): a message between accounts of two nodes used to leave an `accepted` row on the recipient's home
 * (the copies' dedup) and one on the sender's (its `dlv` receipt's), committed per message and kept for the
 * retention. Now the record waits in memory while every copy is acknowledged before its commit, and goes once the
 * sending node released the item (acked, outbox row gone: it will not send it again). 3 real `switchboard serve`
 * processes and a private redis-server, `queue.commit_ms` 1000 (the most it takes) so that an online device's ack
 * comes before the commit (a copy waits one to two intervals). A copy for an offline device is written, and its record with it (a retry after a restart of its
 * home must find it: receipts-durable.test, forward.test). Rows are read from the shard files. No timing
 * assertions: conditions are polled.
 */
import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { accountOn, homeOf, threeNodes } from "./three-nodes.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { Message, Receipt } from "../../src/client/types.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { waitFor } from "../helpers/harness.ts";

const { nodes, device, connect } = threeNodes(4000, ["--queue-commit-ms", "1000", "--presence-stranger-receipts", "100000"]);

const client = (key: KeyFile, receipts: Receipt[], msgs: Message[]): Promise<SwitchboardClient> =>
  connect(key, homeOf(key.account), (c) => {
    c.on("receipt", (r: Receipt) => void receipts.push(r));
    c.on("message", (m: Message) => void msgs.push(m));
  });

/** Acceptance records (both tables) of these senders in a node's shard files. */
function records(node: string, senders: string[]): number {
  const dir = join(nodes.get(node)!.dataDir, "queues");
  let n = 0;
  for (const f of readdirSync(dir).filter((f) => /^shard-\d+\.db$/.test(f))) {
    const db = new Database(join(dir, f), { readonly: true });
    try {
      const marks = senders.map(() => "?").join(",");
      for (const t of ["accepted", "unconfirmed"]) n += (db.query(`SELECT count(*) AS n FROM ${t} WHERE sender IN (${marks})`).get(...senders) as { n: number }).n;
    } finally {
      db.close();
    }
  }
  return n;
}

/** A metric of a node, summed over its labels. */
async function metric(node: string, name: string): Promise<number> {
  const { text } = await nodes.get(node)!.http_get("/metrics");
  return text.split("\n").filter((l) => l.startsWith(name + " ") || l.startsWith(name + "{")).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}
/** Records waiting in memory on a node (confirmed or released ones go at its next commit, the others are written). */
const lazies = (node: string) => metric(node, "switchboard_dedup_lazy_records");
/** Link items a node kept in its outbox (a row each) until the peer's ack. */
const kept = async () => (await metric("n1", "switchboard_cluster_link_sent_kept")) + (await metric("n2", "switchboard_cluster_link_sent_kept"));

describe("records of what a link brought", () => {
  test("online both ways: no record left on either home once released; an offline device's copy has its record", async () => {
    const a = accountOn("n1", "ra_");
    const b = accountOn("n2", "rb_");
    const [ka, kb] = [await device(a), await device(b)];
    const [ra, rb, ma, mb]: [Receipt[], Receipt[], Message[], Message[]] = [[], [], [], []];
    const A = await client(ka, ra, ma);
    const B = await client(kb, rb, mb);
    const N = 20;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) sends.push(A.send(b, `a${i}`), B.send(a, `b${i}`));
    await Promise.all(sends);
    const dlv = (rs: Receipt[]) => rs.filter((r) => r.kind === "dlv").length;
    await waitFor(() => mb.length === N && ma.length === N && dlv(ra) === N && dlv(rb) === N, "every message and its dlv, both ways", 60_000);
    // Once none waits in memory, each was either released (no row) or written (unconfirmed, had its sender's node
    // never released it). Senders a and b (their own records: confirming SDK, none) and the accounts the receipts are
    // queued for (a `d` item's record names its recipient account as sender). Before: one row per message and receipt.
    await waitFor(async () => (await lazies("n1")) + (await lazies("n2")) === 0, "no record waiting in memory", 30_000);
    expect(records("n1", [a, b]) + records("n2", [a, b])).toBe(0);
    expect(mb.map((m) => new TextDecoder().decode(m.payload))).toEqual(Array.from({ length: N }, (_, i) => `a${i}`));
    // Every copy was acknowledged before it was written, so no row records its ack and its `dlv` needs none either
    // (a crash loses both, as on one node): none kept in an outbox. Before: one outbox row per receipt.
    expect(await kept()).toBe(0);
    // A `read` receipt is made by a stanza, not by an ack: kept until n1's ack (outbox.test: it survives kill -9).
    B.markRead(a, mb[N - 1]!.seq);
    await waitFor(() => ra.some((r) => r.kind === "read"), "the read receipt at a", 30_000);
    expect(await kept()).toBe(1);

    // An offline device of b: its copy is committed (the sent waits for it), and the record with it.
    const b2 = accountOn("n2", "rc_");
    const kb2 = await device(b2);
    const before = records("n2", [a]);
    const away = await A.send(b2, "while you were away");
    expect(records("n2", [a])).toBe(before + 1);
    // Acked once written: its ack is a durable delete, so its `dlv` is kept in n2's outbox until n1 has it.
    const got: Message[] = [];
    await client(kb2, [], got);
    await waitFor(() => ra.some((r) => r.kind === "dlv" && r.id === away.id), "the dlv of the message that waited", 30_000);
    expect(got.length).toBe(1);
    expect(await kept()).toBe(2);
  }, 120_000);
});

/**
 * An `ack` handled ahead of stanzas its connection sent before it (inbound pacing, src/transport/listener.ts; the
 * one exception to the order, docs/PROTOCOL.md §6.7): its items are released at once, but its receipts go out only
 * after those stanzas, because they decide whether the sender gets one (§6.11). The recipient writes, in one write,
 * more stanzas than a turn of a fresh server handles (its budget starts at 128), then an iq about the sender, then
 * the ack of the sender's message: the iq waits in the backlog and the ack overtakes it.
 *
 * Without the deferral both went wrong, and the first is how loadtest pairs lost 2-4 of ~600 000 receipts (the
 * recipient's contacts.add and first message to its partner were held at the start of the run while its acks went
 * ahead, so its 11th to 14th receipts were refused as a stranger's, presence.stranger_receipts = 10 a minute):
 * - a contacts.add before the ack: the receipt was dropped as a stranger's;
 * - a block.add before the ack: the blocked sender got the receipt.
 */
import { afterAll, expect, test } from "bun:test";
import { encodeFrame } from "../../src/protocol/codec.ts";
import { concat } from "../../src/protocol/bytes.ts";
import type { MsgS } from "../../src/protocol/stanzas.ts";
import { BACKLOG_PAUSE } from "../../src/transport/listener.ts";
import { startServer, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, msgFrame, rawLogin, rcpts } from "./util.ts";

const servers: TestServer[] = [];
afterAll(() => servers.forEach((s) => s.cleanup()));

/** Above a fresh server's first budget (128 stanzas a turn), below BACKLOG_PAUSE: held, and the socket still read. */
const FILL = 200;

/** A fresh server (its pacing budget at its start value) where one receipt a minute may go to a stranger. */
async function server(): Promise<TestServer> {
  const s = await startServer({ args: ["--canary-interval", "0", "--presence-stranger-receipts", "1"] });
  servers.push(s);
  return s;
}

/** `a` sends one message to bob; resolves with it as bob got it (not acked). */
async function deliver(a: RawConn, b: RawConn, id: string, bobDevice: number): Promise<MsgS> {
  a.send(msgFrame(id, "bob", [bobDevice]));
  return (await b.expect((s) => s.t === "msg" && s.id === id)) as MsgS;
}

/** In one write: FILL pings, then `iq`, then the ack of `q`: the iq is held behind the pings, the ack is not. */
function burst(b: RawConn, iq: Record<string, unknown>, q: number): void {
  const frames: Uint8Array[] = [];
  for (let i = 0; i < FILL; i++) frames.push(encodeFrame({ t: "ping", n: 100_000 + i }));
  frames.push(encodeFrame(iq), encodeFrame({ t: "ack", q: [q] }));
  const bytes = concat(...frames);
  expect(b.sendBytes(bytes)).toBe(bytes.length); // a few kilobytes: the kernel takes them in one write
}

test("a contacts.add held before an ack that went ahead: the sender, no stranger now, gets its dlv receipt", async () => {
  expect(FILL + 2).toBeLessThan(BACKLOG_PAUSE);
  const s = await server();
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const a = await rawLogin(s, alice);
  const b = await rawLogin(s, bob);

  // The one stranger receipt of this minute: alice has written to bob, bob neither to her nor has her as a contact.
  const m1 = await deliver(a, b, "m1", bob.device);
  b.send({ t: "ack", q: [m1.q] });
  await a.expect((r) => r.t === "rcpt" && r.id === "m1");

  const m2 = await deliver(a, b, "m2", bob.device);
  burst(b, { t: "iq", id: 7, op: "contacts.add", a: { u: ["alice"] } }, m2.q);
  expect(await b.expect((r) => r.t === "res" && r.id === 7)).toMatchObject({ ok: true });
  // Sent after the contacts.add: counted against no stranger limit (without the deferral: dropped, and this times out).
  expect(await a.expect((r) => r.t === "rcpt" && r.id === "m2")).toMatchObject({ k: "dlv", u: "bob", seq: m2.seq });
}, 60_000);

test("a block.add held before an ack that went ahead: the blocked sender gets no dlv receipt", async () => {
  const s = await server();
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const a = await rawLogin(s, alice);
  const b = await rawLogin(s, bob);
  b.send({ t: "iq", id: 1, op: "contacts.add", a: { u: ["alice"] } }); // no stranger limit in the way
  expect(await b.expect((r) => r.t === "res" && r.id === 1)).toMatchObject({ ok: true });

  const m1 = await deliver(a, b, "m1", bob.device);
  burst(b, { t: "iq", id: 7, op: "block.add", a: { u: "alice" } }, m1.q);
  expect(await b.expect((r) => r.t === "res" && r.id === 7)).toMatchObject({ ok: true });
  // A receipt is queued to alice when the ack is handled, before bob's answer to his iq: any would be here now.
  await barrier(a);
  expect(rcpts(a, (r) => r.id === "m1")).toEqual([]);
  // The ack itself took effect: m1 is not delivered to bob again on his next connection.
  b.end();
  const b2 = await rawLogin(s, bob);
  await barrier(b2);
  expect(b2.received.filter((x) => x.t === "msg")).toEqual([]);
}, 60_000);

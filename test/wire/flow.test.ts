/**
 * Outbound flow control over real sockets: a device that stops reading is
 * cut off as a slow consumer while the other devices of the account get
 * everything, nothing it had not acknowledged is lost, and a backlog far
 * larger than the outbound limit drains on a later connection.
 *
 * The kernel buffers of a loopback connection hold a few MB when the reader
 * does not read, so the messages here are large (64 KiB payloads, with the
 * frame limit raised to 256 KiB so one `msg` can carry two of them) and the
 * outbound limit is at its minimum (64 KiB).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { MsgS } from "../../src/protocol/stanzas.ts";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { collect, proof, rawLogin } from "./util.ts";

const PAYLOAD = 64 * 1024;
const N = 150; // ~10 MB per recipient device: well beyond what loopback buffers hold (a few MB)
const MAX = 600;
let srv: TestServer;

beforeAll(async () => {
  // A window above MAX, so that the paused device has every message pushed at it (not held back by the window).
  srv = await startServer({ args: ["--limits-outbound-bytes", "65536", "--limits-max-frame", "262144", "--limits-window", "1024"] });
});
afterAll(() => srv?.cleanup());

/** A payload whose bytes say which message and device it is for. */
function payload(i: number, device: number): Uint8Array {
  const p = new Uint8Array(PAYLOAD).fill((i * 7 + device) & 0xff);
  new DataView(p.buffer).setUint32(0, i);
  return p;
}
const indexOf = (p: Uint8Array) => new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(0);
const intact = (p: Uint8Array, i: number, device: number) => p.length === PAYLOAD && indexOf(p) === i && p[PAYLOAD - 1] === ((i * 7 + device) & 0xff);

/** Reads everything on a raw connection, acking as it goes, until `n` messages arrived. */
async function drain(c: RawConn, n: number, what: string): Promise<MsgS[]> {
  let acked = 0;
  await waitFor(() => {
    const got = c.received.filter((s): s is MsgS => s.t === "msg");
    if (got.length > acked) {
      c.send({ t: "ack", q: got.slice(acked).map((m) => m.q) });
      acked = got.length;
    }
    return got.length >= n || c.closed;
  }, what, 60_000);
  return c.received.filter((s): s is MsgS => s.t === "msg");
}

// Over WS the slow device is RawConn's own WebSocket client on a paused TCP socket: uWS's send()
// reports backpressure, the transport stops there, and the rest waits in the outbound buffer as on TCP.
for (const transport of ["tcp", "ws"] as const) test(`a device that stops reading is cut off as a slow consumer; its sibling gets everything; nothing is lost (${transport})`, async () => {
  const ka = await srv.newDevice(`alice-${transport}`);
  const kb1 = await srv.newDevice(`bob-${transport}`);
  const kb2 = await srv.newDevice(`bob-${transport}`);
  const bob = kb1.account;
  const slowBefore = await srv.metric("switchboard_closes_total", '{reason="slow_consumer"}');
  const alice = await srv.client(ka);
  const ca = collect(alice);
  const fast = await srv.client(kb1, { tlsTransport: true });
  const cf = collect(fast);
  await fast.addContacts([ka.account]); // alice is no stranger to bob: every dlv receipt goes (docs/PROTOCOL.md §6.11)
  const slow = await rawLogin(srv, kb2, transport);
  slow.socket.pause(); // logged in, then never reads

  // Flood in batches until the paused device is cut off (at least N messages; more if this
  // machine's socket buffers are bigger). A push happens when a message is accepted, before its
  // `sent`, so once a batch is `sent` the cut-off, if due, has happened.
  let sent = 0;
  while (sent < N || (await srv.metric("switchboard_closes_total", '{reason="slow_consumer"}')) === slowBefore) {
    if (sent >= MAX) throw new Error(`no slow consumer after ${sent} messages of ${PAYLOAD} bytes`);
    const batch = [];
    for (let i = sent; i < sent + 50; i++) batch.push(alice.send(bob, (d) => payload(i, d), { id: `f${i}` }));
    await Promise.all(batch); // durable
    sent += 50;
  }
  const total = sent;
  await waitFor(() => cf.messages.length === total || cf.closes.length > 0, `the fast device to get all ${total}`, 60_000);
  expect(cf.closes).toEqual([]); // the fast one was never cut off
  expect(await srv.metric("switchboard_closes_total", '{reason="slow_consumer"}')).toBe(slowBefore + 1);
  expect(cf.messages.map((m) => m.id)).toEqual(Array.from({ length: total }, (_, i) => `f${i}`));
  expect(cf.messages.every((m, i) => intact(m.payload, i, 1))).toBe(true);

  // The slow socket, read now: a prefix of the messages, then the end of the connection.
  slow.socket.resume();
  await slow.waitClosed(30_000);
  const partial = slow.received.filter((s): s is MsgS => s.t === "msg");
  expect(partial.length).toBeLessThan(total);
  expect(partial.map((m) => m.id)).toEqual(Array.from({ length: partial.length }, (_, i) => `f${i}`));

  // bob2 comes back, reads and acks: every message it had not acknowledged, in order, intact.
  const again = await rawLogin(srv, kb2, transport);
  const all = await drain(again, total, `bob2 to get all ${total} again`);
  expect(again.closed).toBe(false);
  expect(all.map((m) => m.id)).toEqual(Array.from({ length: total }, (_, i) => `f${i}`));
  expect(all.every((m, i) => intact(m.p, i, 2))).toBe(true);
  // ... and alice learns that both devices got every message.
  await waitFor(() => ca.receipts.filter((r) => r.kind === "dlv").length === 2 * total, "2N dlv receipts", 30_000);
  const dlv = ca.receipts.filter((r) => r.kind === "dlv");
  expect(new Set(dlv.map((r) => `${r.id}/${r.device}`)).size).toBe(2 * total);
  again.end();
  await alice.close();
  await fast.close();
}, 120_000);

for (const transport of ["tcp", "tls", "ws", "wss"] as const) test(`a backlog far larger than the outbound limit drains on a connection that reads late (${transport})`, async () => {
  const kc = await srv.newDevice(`carol-${transport}`);
  const kd = await srv.newDevice(`dave-${transport}`);
  const dave = kd.account;
  const carol = await srv.client(kc);
  const sends = [];
  for (let i = 0; i < N; i++) sends.push(carol.send(dave, (d) => payload(i, d), { id: `b${i}` }));
  await Promise.all(sends);
  const slowBefore = await srv.metric("switchboard_closes_total", '{reason="slow_consumer"}');
  const loginsBefore = await srv.metric("switchboard_logins_total", '{result="ok"}');

  // Log in and stop reading before `ready` arrives: the server pushes the backlog into a socket nobody reads.
  const d = await srv.raw(transport);
  const h = await d.hello();
  d.send({ t: "auth", u: dave, d: kd.device, sig: proof(kd, "auth", h.sid, h.nonce, dave, kd.device) });
  d.socket.pause();
  // The login (and with it the synchronous start of the backlog) has been handled once the counter moved.
  await waitFor(async () => (await srv.metric("switchboard_logins_total", '{result="ok"}')) === loginsBefore + 1, "the login");
  // Not a slow consumer: the backlog waits in the store, not in memory, until the socket drains.
  expect(await srv.metric("switchboard_closes_total", '{reason="slow_consumer"}')).toBe(slowBefore);
  expect(await srv.metric("switchboard_unsent_bytes_max")).toBeLessThanOrEqual(65536 + 256 * 1024);
  d.socket.resume();
  const all = await drain(d, N, `dave to get all ${N}`);
  expect(d.closed).toBe(false);
  expect(all.map((m) => m.id)).toEqual(Array.from({ length: N }, (_, i) => `b${i}`));
  expect(all.every((m, i) => intact(m.p, i, 1))).toBe(true);
  expect(await srv.metric("switchboard_closes_total", '{reason="slow_consumer"}')).toBe(slowBefore);
  d.end();
  await carol.close();
}, 120_000);

/**
 * A `sent` riding on its own receipt (issue 20 target 2, docs/PROTOCOL.md §6.2 "A `sent` on its receipt"): for a
 * client that offers `hello {sr: true}`, the `sent` of a message whose recipient acknowledged it in the same turn
 * goes out inside the `dlv` receipt (`rcpt {sts}`), one frame instead of two; it counts as one `sent` for `ack {sc}`.
 * A client that does not offer it gets the two frames as before, and so does every client of a server with
 * queue.sent_rides = false (on by default: the servers here run with the default). The SDK offers it, resolves its sends from it and
 * confirms it. The commit window is long (1 s) so that the recipient's ack comes before the commit (a write-back hit),
 * which is when `sent` and receipt are released together; nothing here measures time.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import type { SwitchboardClient, Receipt } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { HelloS, Rcpt } from "../../src/protocol/stanzas.ts";
import { acceptanceRecords, barrier } from "./util.ts";

const servers: TestServer[] = [];
const clients: SwitchboardClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
});
afterAll(() => servers.forEach((s) => s.cleanup()));

/** queue.sent_rides at its default (on) unless `args` say otherwise. */
async function server(args: string[] = []): Promise<TestServer> {
  // No canary: its own records would count in acceptanceRecords (see confirm.test.ts).
  const s = await startServer({ args: ["--queue-commit-ms", "1000", "--canary-interval", "0", ...args] });
  servers.push(s);
  return s;
}

async function sender(s: TestServer, kf: KeyFile, hello: Record<string, unknown>): Promise<RawConn> {
  const c = await s.raw();
  c.send({ t: "hello", v: [1], ...hello });
  c.serverHello = (await c.expect("hello")) as HelloS;
  await c.login(kf);
  return c;
}

/** A server, bob logged in raw, alice's raw sender with `hello` (which the server must answer). */
async function alicesToBob(hello: Record<string, unknown>, args: string[] = []): Promise<{ s: TestServer; a: RawConn; b: RawConn; bob: KeyFile }> {
  const s = await server(args);
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const b = await s.raw();
  await b.login(bob);
  return { s, a: await sender(s, alice, hello), b, bob };
}

const p = new Uint8Array([1, 2, 3]);

test("hello {sr}: the sent rides on the dlv receipt, one frame, counted once by ack {sc}", async () => {
  const { s, a, b, bob } = await alicesToBob({ sc: true, sr: true });

  for (let i = 1; i <= 3; i++) {
    a.send({ t: "msg", id: `m${i}`, to: "bob", p: [[bob.device, p]] });
    const m = await b.expect("msg");
    b.send({ t: "ack", q: [m.q] });
    const r = (await a.expect("rcpt")) as Rcpt;
    expect(r).toMatchObject({ k: "dlv", u: "bob", w: "bob", id: `m${i}`, seq: m.seq });
    expect(r.sts).toBe(m.ts); // the acceptance's ts, as `sent` would have said
    a.send({ t: "ack", q: [r.q], sc: i }); // each receipt frame was one `sent`: a count of i is within what was written
    await barrier(a);
  }
  expect(a.received.filter((x) => x.t === "sent")).toEqual([]);
  expect(a.received.filter((x) => x.t === "err")).toEqual([]);
  a.send({ t: "ack", sc: 4 }); // one more than the three frames that carried a `sent`
  expect(await a.expect("err")).toMatchObject({ e: "bad_field" });

  // The confirmed records were released (none written), and the receipts, acked before the commit, never stored.
  expect(await s.stop()).toBe(0);
  expect(acceptanceRecords(s)).toEqual({ accepted: 0, unconfirmed: 0 });
});

test("without sr the sent and the receipt stay two frames (older clients), in that order", async () => {
  const { a, b, bob } = await alicesToBob({ sc: true });

  a.send({ t: "msg", id: "m1", to: "bob", p: [[bob.device, p]] });
  const m = await b.expect("msg");
  b.send({ t: "ack", q: [m.q] });
  const sent = await a.expect("sent");
  expect(sent).toMatchObject({ id: "m1", to: "bob", seq: m.seq, ts: m.ts });
  const r = (await a.expect("rcpt")) as Rcpt;
  expect(r).toMatchObject({ k: "dlv", id: "m1", seq: m.seq });
  expect(r.sts).toBeUndefined();
  const order = a.received.filter((x) => x.t === "sent" || x.t === "rcpt").map((x) => x.t);
  expect(order).toEqual(["sent", "rcpt"]);
  a.send({ t: "ack", q: [r.q], sc: 1 });
  await barrier(a);
  expect(a.received.filter((x) => x.t === "err")).toEqual([]);
});

test("queue.sent_rides false: a client that offers sr gets the sent and the receipt as two frames", async () => {
  const { a, b, bob } = await alicesToBob({ sc: true, sr: true }, ["--queue-sent-rides", "false"]);

  a.send({ t: "msg", id: "m1", to: "bob", p: [[bob.device, p]] });
  const m = await b.expect("msg");
  b.send({ t: "ack", q: [m.q] });
  expect(await a.expect("sent")).toMatchObject({ id: "m1", to: "bob", seq: m.seq, ts: m.ts });
  const r = (await a.expect("rcpt")) as Rcpt;
  expect(r).toMatchObject({ k: "dlv", id: "m1", seq: m.seq });
  expect(r.sts).toBeUndefined();
});

test("the SDK offers sr, resolves its sends from the receipts and confirms them", async () => {
  const s = await server();
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const rb = await s.client(bob);
  clients.push(rb);
  const ra = await s.client(alice);
  clients.push(ra);
  const receipts: Receipt[] = [];
  ra.on("receipt", (r) => receipts.push(r));
  // Alice is no stranger to bob once he wrote to her (receipts to strangers are rate-limited, §6.11); his own
  // receipt of it is awaited so that no frame of it is counted below.
  const bobsReceipt = new Promise<void>((res) => rb.on("receipt", (r) => r.kind === "dlv" && res()));
  await rb.send("alice", "hi");
  await bobsReceipt;
  const framesBefore = await s.metric("switchboard_frames_out_total");

  const n = 20;
  const sent: Awaited<ReturnType<SwitchboardClient["send"]>>[] = [];
  for (let i = 0; i < n; i++) sent.push(await ra.send("bob", `hello ${i}`)); // one at a time: each released by bob's ack
  await waitFor(() => receipts.filter((r) => r.kind === "dlv").length === n, "every dlv receipt");
  for (let i = 0; i < n; i++) expect(receipts.find((r) => r.kind === "dlv" && r.id === sent[i]!.id)?.seq).toBe(sent[i]!.seq);
  // Per message the server wrote bob's copy and alice one receipt carrying the `sent`: 2 frames, not 3 (pings aside).
  const frames = (await s.metric("switchboard_frames_out_total")) - framesBefore;
  expect(frames).toBeLessThan(2.5 * n);

  await ra.devices("bob"); // a round trip after the acks: the server has handled every confirmation
  for (const c of clients.splice(0)) await c.close();
  expect(await s.stop()).toBe(0);
  expect(acceptanceRecords(s)).toEqual({ accepted: 0, unconfirmed: 0 }); // every riding `sent` was confirmed by the SDK's count
});

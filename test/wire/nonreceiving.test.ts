/**
 * Non-receiving sessions (`auth {rx: false}`, docs/PROTOCOL.md §4.3): a
 * one-shot command on a device whose chat is open must neither evict the
 * chat nor be evicted by it, must get the answers to its own requests, and
 * must be delivered nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { keyFromFile, type KeyFile } from "../../src/client/keys.ts";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { MAX_SENDERS_PER_DEVICE } from "../../src/core/registry.ts";
import { barrier, collect, msgFrame, msgs, proof, rawLogin } from "./util.ts";

let srv: TestServer;
let alice: KeyFile;
let bob: KeyFile;

beforeAll(async () => {
  srv = await startServer();
  alice = await srv.newDevice("alice");
  bob = await srv.newDevice("bob");
});
afterAll(() => srv?.cleanup());

/** A raw connection logged in as a non-receiving session of `kf`'s device. */
async function rawSender(kf: KeyFile): Promise<RawConn> {
  const c = await srv.raw();
  const h = await c.hello();
  c.send({ t: "auth", u: kf.account, d: kf.device, sig: proof(keyFromFile(kf), "auth", h.sid, h.nonce, kf.account, kf.device), rx: false });
  await c.expect("ready");
  return c;
}

describe("auth rx: false", () => {
  test("two connections of one device: the sender gets its own sent, the receiver keeps its deliveries, no one is replaced", async () => {
    const chat = await rawLogin(srv, alice);
    const oneShot = await rawSender(alice);
    const b = await rawLogin(srv, bob);
    // The one-shot sends: its `sent` comes to it, not to the chat.
    oneShot.send(msgFrame("rx-1", "bob", [bob.device]));
    const sent = await oneShot.expect("sent");
    expect(sent.id).toBe("rx-1");
    await b.expect((s) => s.t === "msg" && s.id === "rx-1");
    // A resend answered from dedup also goes to the connection that resent.
    oneShot.send(msgFrame("rx-1", "bob", [bob.device]));
    expect((await oneShot.expect("sent")).id).toBe("rx-1");
    // Bob writes to alice: the chat gets it, the one-shot does not.
    b.send(msgFrame("rx-2", "alice", [alice.device]));
    await b.expect("sent");
    await chat.expect((s) => s.t === "msg" && s.id === "rx-2");
    await barrier(oneShot);
    await barrier(chat);
    expect(chat.received.filter((s) => s.t === "sent")).toEqual([]);
    expect(msgs(oneShot)).toEqual([]);
    expect(oneShot.received.filter((s) => s.t === "rcpt" || s.t === "evt")).toEqual([]);
    // iq answers come back to the one-shot.
    oneShot.send({ t: "iq", id: 7, op: "devices", a: {} });
    const res = await oneShot.expect("res");
    expect({ id: res.id, ok: res.ok }).toEqual({ id: 7, ok: true });
    // Neither replaced the other.
    expect(chat.closed || oneShot.closed).toBe(false);
    // A new receiving login replaces the chat only.
    const chat2 = await rawLogin(srv, alice);
    const c = await chat.expect("close");
    expect(c.r).toBe("replaced");
    await barrier(oneShot);
    expect(oneShot.closed).toBe(false);
    // The receiving session's acks still work: the one-shot's acks of foreign ids change nothing.
    const m = await chat2.expect((s) => s.t === "msg" && s.id === "rx-2"); // redelivered: the chat never acked it
    oneShot.send({ t: "ack", q: [(m as { q: number }).q] });
    await barrier(oneShot);
    chat2.send({ t: "ack", q: [(m as { q: number }).q] });
    await b.expect((s) => s.t === "rcpt" && s.k === "dlv" && s.id === "rx-2");
    for (const x of [chat2, oneShot, b]) x.end();
  });

  test(`at most ${MAX_SENDERS_PER_DEVICE} per device: one more closes the oldest with replaced; the receiving one stays`, async () => {
    const chat = await rawLogin(srv, alice);
    const senders: RawConn[] = [];
    for (let i = 0; i < MAX_SENDERS_PER_DEVICE; i++) senders.push(await rawSender(alice));
    const extra = await rawSender(alice);
    const c = await senders[0]!.expect("close");
    expect(c.r).toBe("replaced");
    for (const s of [...senders.slice(1), extra, chat]) {
      await barrier(s);
      expect(s.closed).toBe(false);
    }
    for (const s of [...senders, extra, chat]) s.end();
  });

  test("rx must be a boolean", async () => {
    const c = await srv.raw();
    const h = await c.hello();
    c.send({ t: "auth", u: alice.account, d: alice.device, sig: proof(keyFromFile(alice), "auth", h.sid, h.nonce, alice.account, alice.device), rx: "no" });
    const e = await c.expect("err");
    expect(e.e).toBe("bad_field");
    c.end();
  });

  test("SDK: a one-shot client (rx: false) beside an open chat; revoking the device closes both", async () => {
    const second = await srv.newDevice("alice", "second");
    const chat = await srv.client(second);
    const chatCol = collect(chat);
    const oneShot = await srv.client(second, { rx: false, reconnect: false });
    const shotCol = collect(oneShot);
    expect((await oneShot.devices("alice")).length).toBeGreaterThanOrEqual(2);
    const sent = await oneShot.send("bob", "from the one-shot");
    expect(sent.seq).toBeGreaterThan(0);
    const b = await srv.client(bob);
    await b.send("alice", (d) => new TextEncoder().encode(`to ${d}`));
    await waitFor(() => chatCol.messages.some((m) => m.from === "bob"), "the chat to get bob's message");
    expect(chatCol.closes).toEqual([]);
    expect(shotCol.messages).toEqual([]);
    // Revocation closes every session of the device, non-receiving ones too.
    const admin = await srv.client(alice);
    const closed = new Promise<string>((resolve) => oneShot.on("close", (x) => resolve(x.reason)));
    await admin.request("device.revoke", { d: second.device });
    expect(await closed).toBe("revoked");
    for (const x of [chat, oneShot, b, admin]) await x.close().catch(() => {});
  });
});

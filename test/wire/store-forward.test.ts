/** Store-and-forward rules: dedup across restarts, queue bounds, retention with explicit gap signals. */
import { afterAll, describe, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { Receipt } from "../../src/client/client.ts";

const servers: TestServer[] = [];
afterAll(() => servers.forEach((s) => s.cleanup()));
async function server(args: string[] = []): Promise<TestServer> {
  const s = await startServer({ args });
  servers.push(s);
  return s;
}

describe("dedup", () => {
  for (const transport of ["tcp", "ws"] as const) test(`a resend after kill -9 and restart gets the original sent, with the original seq, and is not delivered again (${transport})`, async () => {
    const s = await server();
    const alice = await s.newDevice("alice");
    const bob = await s.newDevice("bob");
    const raw = await s.raw(transport);
    await raw.login(alice);
    const p = new Uint8Array([1, 2, 3]);
    raw.send({ t: "msg", id: "once", to: "bob", p: [[bob.device, p]] });
    const first = await raw.expect("sent");
    raw.send({ t: "msg", id: "other", to: "bob", p: [[bob.device, p]] });
    await raw.expect("sent");
    await s.kill9();
    await s.restart();
    const again = await s.raw(transport);
    await again.login(alice);
    again.send({ t: "msg", id: "once", to: "bob", p: [[bob.device, p]] });
    const second = await again.expect("sent");
    expect(second).toMatchObject({ id: "once", seq: first.seq, ts: first.ts, to: "bob" });
    // Bob gets each message exactly once.
    const rb = await s.raw(transport);
    await rb.login(bob);
    const m1 = await rb.expect("msg");
    const m2 = await rb.expect("msg");
    expect([m1.id, m2.id]).toEqual(["once", "other"]);
    rb.send({ t: "ping", n: 9 });
    await rb.expect("pong");
    expect(rb.received.filter((x) => x.t === "msg").length).toBe(2);
  });
});

describe("bounds", () => {
  test("a send beyond a device's queue bound is refused with queue_full, naming the device; nothing is dropped", async () => {
    const s = await server(["--queue-max-messages", "3"]);
    const alice = await s.newDevice("alice");
    const bob = await s.newDevice("bob");
    const raw = await s.raw();
    await raw.login(alice);
    for (let i = 0; i < 3; i++) {
      raw.send({ t: "msg", id: `m${i}`, to: "bob", p: [[bob.device, new Uint8Array([i])]] });
      await raw.expect("sent");
    }
    raw.send({ t: "msg", id: "m3", to: "bob", p: [[bob.device, new Uint8Array([3])]] });
    const err = await raw.expect("err");
    expect(err).toMatchObject({ e: "queue_full", id: "m3", x: { full: { bob: [bob.device] } } });
    // Bob drains; then there is room again.
    const rb = await s.raw();
    await rb.login(bob);
    const got = [await rb.expect("msg"), await rb.expect("msg"), await rb.expect("msg")];
    expect(got.map((m) => m.id)).toEqual(["m0", "m1", "m2"]);
    rb.send({ t: "ack", q: got.map((m) => m.q) });
    await waitFor(async () => {
      raw.send({ t: "msg", id: `retry-${Date.now()}`, to: "bob", p: [[bob.device, new Uint8Array([3])]] });
      const r = await raw.expect((x) => x.t === "sent" || x.t === "err");
      return r.t === "sent";
    }, "room in bob's queue after his acks");
  });
});

describe("retention", () => {
  test("expired items are never silent: the device gets a gap with the count, the sender an exp receipt", async () => {
    const s = await server(["--queue-retention", "1", "--queue-expire-every", "1"]);
    const alice = await s.newDevice("alice");
    const bob = await s.newDevice("bob");
    const a = await s.client(alice);
    const receipts: Receipt[] = [];
    a.on("receipt", (r) => receipts.push(r));
    const sent = [await a.send("bob", "one"), await a.send("bob", "two")];
    await waitFor(() => receipts.filter((r) => r.kind === "exp").length === 2, "two exp receipts", 20_000);
    expect(receipts.filter((r) => r.kind === "exp").map((r) => r.seq).sort()).toEqual(sent.map((x) => x.seq).sort());
    expect(receipts.every((r) => r.account === "bob" && r.device === bob.device)).toBe(true);
    // Bob connects later: no messages, one gap notice saying two were lost.
    const gaps: number[] = [];
    let messages = 0;
    const b = await s.client(bob, {
      reconnect: false,
      setup: (c) => {
        c.on("gap", (g) => gaps.push(g.count));
        c.on("message", () => messages++);
      },
    });
    await waitFor(() => gaps.length > 0, "the gap notice");
    expect(gaps).toEqual([2]);
    expect(messages).toBe(0);
    expect(await s.metric("switchboard_queue_expired_total")).toBeGreaterThanOrEqual(2);
    await a.close();
    await b.close();
  });
});

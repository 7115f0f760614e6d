/**
 * Messaging over real sockets: fan-out to every device, sync copies,
 * sent / delivered / read receipts, shared conversation sequence numbers,
 * device-set checks, dedup, offline queues, redelivery, flow-control window
 * and survival of kill -9.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startServer, waitFor, type RawConn, type TestServer, type Transport } from "../helpers/harness.ts";
import type { MsgS, Rcpt, Res } from "../../src/protocol/stanzas.ts";
import { barrier, collect, dec, enc, msgFrame, msgs, rawLogin, rcpts } from "./util.ts";

let srv: TestServer;
/** A server with a flow-control window of 4. */
let srvW: TestServer;

beforeAll(async () => {
  [srv, srvW] = await Promise.all([startServer(), startServer({ args: ["--limits-window", "4"] })]);
});
afterAll(() => {
  srv?.cleanup();
  srvW?.cleanup();
});

type T = Transport;

async function ackAll(c: RawConn, items: { q: number }[]): Promise<void> {
  if (items.length) c.send({ t: "ack", q: items.map((i) => i.q) });
}

describe("two accounts with two devices each", () => {
  const layouts: [string, { a1: T; a2: T; b1: T; b2: T }][] = [
    ["tcp", { a1: "tcp", a2: "tcp", b1: "tcp", b2: "tcp" }],
    ["mixed", { a1: "tls", a2: "tcp", b1: "tcp", b2: "tls" }],
    ["tls", { a1: "tls", a2: "tls", b1: "tls", b2: "tls" }],
    ["ws", { a1: "ws", a2: "ws", b1: "ws", b2: "ws" }],
    ["ws-mixed", { a1: "ws", a2: "tcp", b1: "tls", b2: "wss" }],
  ];
  for (const [tag, t] of layouts) {
    test(`fan-out, sync copies, receipts and shared sequence numbers (${tag})`, async () => {
      const A = `alice-${tag}`;
      const B = `bob-${tag}`;
      const ka1 = await srv.newDevice(A);
      const ka2 = await srv.newDevice(A);
      const kb1 = await srv.newDevice(B);
      const kb2 = await srv.newDevice(B);
      expect([ka1.device, ka2.device, kb1.device, kb2.device]).toEqual([1, 2, 1, 2]);
      const [a1, a2, b1, b2] = await Promise.all([rawLogin(srv, ka1, t.a1), rawLogin(srv, ka2, t.a2), rawLogin(srv, kb1, t.b1), rawLogin(srv, kb2, t.b2)]);
      const all = [a1, a2, b1, b2];

      // alice1 -> bob: one payload per bob device, a sync copy for alice2.
      const before = Date.now();
      a1.send(msgFrame("m1", B, [1, 2], [2]));
      const sent1 = await a1.expect("sent");
      expect(sent1).toMatchObject({ id: "m1", to: B });
      expect(Number.isSafeInteger(sent1.seq) && sent1.seq > 0).toBe(true);
      expect(sent1.ts).toBeGreaterThanOrEqual(before - 60_000); // the server's clock, sanity only
      expect(sent1.ts).toBeLessThanOrEqual(Date.now() + 60_000);

      const m1b1 = await b1.expect((s) => s.t === "msg" && s.id === "m1") as MsgS;
      const m1b2 = await b2.expect((s) => s.t === "msg" && s.id === "m1") as MsgS;
      const m1a2 = await a2.expect((s) => s.t === "msg" && s.id === "m1") as MsgS;
      for (const [m, d] of [[m1b1, 1], [m1b2, 2]] as const) {
        expect(m).toMatchObject({ from: A, fd: 1, to: B, seq: sent1.seq, ts: sent1.ts });
        expect(m.sync).toBeUndefined();
        expect(dec(m.p)).toBe(`m1|${B}|${d}`);
      }
      expect(m1a2).toMatchObject({ from: A, fd: 1, to: B, seq: sent1.seq, ts: sent1.ts, sync: true });
      expect(dec(m1a2.p)).toBe("m1|sync|2");

      // Recipient devices ack -> every alice device gets one dlv receipt per bob device.
      await ackAll(b1, [m1b1]);
      await ackAll(b2, [m1b2]);
      await ackAll(a2, [m1a2]); // a sync copy: its ack yields no receipt
      for (const a of [a1, a2]) {
        const got: Rcpt[] = [];
        for (let i = 0; i < 2; i++) got.push((await a.expect((s) => s.t === "rcpt" && s.k === "dlv" && s.id === "m1")) as Rcpt);
        got.sort((x, y) => x.d - y.d);
        expect(got.map((r) => ({ k: r.k, u: r.u, d: r.d, w: r.w, seq: r.seq, id: r.id }))).toEqual([
          { k: "dlv", u: B, d: 1, w: B, seq: sent1.seq, id: "m1" },
          { k: "dlv", u: B, d: 2, w: B, seq: sent1.seq, id: "m1" },
        ]);
        await ackAll(a, got);
      }

      // bob1 reads up to m1: alice's devices get `read`, bob2 gets the read sync.
      b1.send({ t: "read", u: A, seq: sent1.seq });
      for (const a of [a1, a2]) {
        const r = (await a.expect((s) => s.t === "rcpt" && s.k === "read")) as Rcpt;
        expect(r).toMatchObject({ k: "read", u: B, d: 1, w: B, seq: sent1.seq });
        expect(r.id).toBeUndefined();
        await ackAll(a, [r]);
      }
      const rs = (await b2.expect((s) => s.t === "rcpt" && s.k === "read")) as Rcpt;
      expect(rs).toMatchObject({ k: "read", u: B, d: 1, w: A, seq: sent1.seq });
      await ackAll(b2, [rs]);

      // A lower marker afterwards changes nothing and tells no one.
      b1.send({ t: "read", u: A, seq: sent1.seq - 1 });
      b1.send({ t: "read", u: A, seq: sent1.seq }); // equal: also ignored

      // bob1 -> alice in the same conversation: the sequence is shared.
      b1.send(msgFrame("m2", A, [1, 2], [2]));
      const sent2 = await b1.expect("sent");
      expect(sent2.seq).toBeGreaterThan(sent1.seq);
      const m2 = await Promise.all([a1, a2, b2].map((c) => c.expect((s) => s.t === "msg" && s.id === "m2") as Promise<MsgS>));
      expect(m2.map((m) => [m.seq, m.from, m.fd, m.to, m.sync ?? false])).toEqual([
        [sent2.seq, B, 1, A, false],
        [sent2.seq, B, 1, A, false],
        [sent2.seq, B, 1, A, true],
      ]);
      await ackAll(a1, [m2[0]!]);
      await ackAll(a2, [m2[1]!]);
      await ackAll(b2, [m2[2]!]);
      // bob1 and bob2 learn that alice1 and alice2 got m2.
      for (const b of [b1, b2]) {
        const got: Rcpt[] = [];
        for (let i = 0; i < 2; i++) got.push((await b.expect((s) => s.t === "rcpt" && s.k === "dlv" && s.id === "m2")) as Rcpt);
        expect(got.map((r) => r.d).sort()).toEqual([1, 2]);
        expect(got.every((r) => r.u === A && r.w === A && r.seq === sent2.seq)).toBe(true);
        await ackAll(b, got);
      }

      // alice2 (the other device) sends next: still the same sequence.
      a2.send(msgFrame("m3", B, [1, 2], [1]));
      const sent3 = await a2.expect("sent");
      expect(sent3.seq).toBeGreaterThan(sent2.seq);
      const m3 = await Promise.all([b1, b2, a1].map((c) => c.expect((s) => s.t === "msg" && s.id === "m3") as Promise<MsgS>));
      expect(m3.map((m) => [m.seq, m.fd, m.sync ?? false])).toEqual([[sent3.seq, 2, false], [sent3.seq, 2, false], [sent3.seq, 2, true]]);
      await ackAll(b1, [m3[0]!]);
      await ackAll(b2, [m3[1]!]);
      await ackAll(a1, [m3[2]!]);

      // bob1 reads up to m3: the next read receipt alice1 sees is for m3, so the lower and
      // equal markers sent before produced nothing (each queue delivers in order).
      b1.send({ t: "read", u: A, seq: sent3.seq });
      const r3 = (await a1.expect((s) => s.t === "rcpt" && s.k === "read")) as Rcpt;
      expect(r3.seq).toBe(sent3.seq);
      await b2.expect((s) => s.t === "rcpt" && s.k === "read" && s.seq === sent3.seq);

      await Promise.all(all.map(barrier));
      // Exactly once each, and nothing to the sending device itself.
      const ids = (c: RawConn) => msgs(c).map((m) => m.id);
      expect(ids(a1)).toEqual(["m2", "m3"]);
      expect(ids(a2)).toEqual(["m1", "m2"]);
      expect(ids(b1)).toEqual(["m1", "m3"]);
      expect(ids(b2)).toEqual(["m1", "m2", "m3"]);
      // Read receipts: alice's devices saw exactly the two forward moves; bob1 (the reader) none.
      expect(rcpts(a1, (r) => r.k === "read").map((r) => r.seq)).toEqual([sent1.seq, sent3.seq]);
      expect(rcpts(a2, (r) => r.k === "read").map((r) => r.seq)).toEqual([sent1.seq, sent3.seq]);
      expect(rcpts(b2, (r) => r.k === "read").map((r) => r.seq)).toEqual([sent1.seq, sent3.seq]);
      expect(rcpts(b1, (r) => r.k === "read")).toEqual([]);
      // dlv receipts: two per message (one per recipient device), none for sync copies.
      // m3's dlv receipts go to both alice devices (a2 sent it, a1 is the other).
      for (const a of [a1, a2]) {
        for (let i = 0; i < 2; i++) await a.expect((s) => s.t === "rcpt" && s.k === "dlv" && s.id === "m3");
        await barrier(a);
        expect(rcpts(a, (r) => r.k === "dlv").map((r) => `${r.id}:${r.u}/${r.d}`).sort()).toEqual([`m1:${B}/1`, `m1:${B}/2`, `m3:${B}/1`, `m3:${B}/2`]);
      }
      for (const b of [b1, b2]) expect(rcpts(b, (r) => r.k === "dlv").map((r) => `${r.id}:${r.u}/${r.d}`).sort()).toEqual([`m2:${A}/1`, `m2:${A}/2`]);
      for (const c of all) c.end();
    }, 30_000);
  }

  test("SDK clients (TLS and TCP) see messages, sync copies and receipts as events", async () => {
    const A = "sdk-alice";
    const B = "sdk-bob";
    const ka1 = await srv.newDevice(A);
    const ka2 = await srv.newDevice(A);
    const kb1 = await srv.newDevice(B);
    const kb2 = await srv.newDevice(B);
    const a1 = await srv.client(ka1, { tlsTransport: true });
    const a2 = await srv.client(ka2);
    const b1 = await srv.client(kb1);
    const b2 = await srv.client(kb2, { tlsTransport: true });
    const [ca1, ca2, cb1, cb2] = [collect(a1), collect(a2), collect(b1), collect(b2)];
    const s1 = await a1.send(B, (d, acct) => enc(`hi ${acct}/${d}`));
    const s2 = await b2.send(A, "hello back");
    expect(s2.seq).toBeGreaterThan(s1.seq);
    // b2 sent s2, so b1 (bob's other device) holds its sync copy; a2 holds a1's sync copy of s1.
    await waitFor(() => cb1.messages.length === 2 && cb2.messages.length === 1 && ca2.messages.length === 2 && ca1.messages.length === 1, "fan-out").catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify([cb1, cb2, ca1, ca2].map((c) => c.messages.map((m) => [m.id, m.sync])))}`);
    });
    expect(cb1.messages.map((m) => [m.id, dec(m.payload), m.sync, m.conversation])).toEqual([[s1.id, `hi ${B}/1`, false, A], [s2.id, "hello back", true, A]]);
    expect(cb2.messages.map((m) => [m.id, dec(m.payload), m.sync, m.conversation])).toEqual([[s1.id, `hi ${B}/2`, false, A]]);
    expect(ca1.messages.map((m) => [m.id, m.sync, m.conversation, m.seq])).toEqual([[s2.id, false, B, s2.seq]]);
    expect(ca2.messages.map((m) => [m.id, m.sync, m.conversation, m.seq])).toEqual([[s1.id, true, B, s1.seq], [s2.id, false, B, s2.seq]]);
    expect(dec(ca2.messages[0]!.payload)).toBe(`hi ${A}/2`);
    await waitFor(() => ca1.receipts.filter((r) => r.kind === "dlv").length === 2 && ca2.receipts.filter((r) => r.kind === "dlv").length === 2, "dlv receipts");
    b1.markRead(A, s2.seq);
    await waitFor(() => [ca1, ca2].every((c) => c.receipts.some((r) => r.kind === "read" && r.seq === s2.seq)) && cb2.receipts.some((r) => r.kind === "read"), "read receipts");
    expect(cb2.receipts.find((r) => r.kind === "read")).toMatchObject({ account: B, device: 1, with: A, seq: s2.seq });
    for (const c of [a1, a2, b1, b2]) await c.close();
  }, 30_000);
});

describe("typing, presence and SDK limits", () => {
  test("typing goes to the peer's connected devices only and is never stored (presence and privacy: test/presence/)", async () => {
    const ka = await srv.newDevice("tya");
    const kb1 = await srv.newDevice("tyb");
    const kb2 = await srv.newDevice("tyb");
    const a = await rawLogin(srv, ka);
    const b1 = await rawLogin(srv, kb1, "tls");
    // Typing goes only between acquainted accounts (docs/PROTOCOL.md §6.6): a contact makes them so.
    b1.send({ t: "iq", id: 9, op: "contacts.add", a: { u: ["tya"] } });
    expect(await b1.expect("res")).toMatchObject({ id: 9, ok: true });
    a.send({ t: "pres", to: "tyb", s: "typing" });
    expect(await b1.expect("pres")).toEqual({ t: "pres", u: "tya", d: 1, s: "typing" });
    a.send({ t: "pres", to: "tyb", s: "paused" });
    expect(await b1.expect("pres")).toMatchObject({ s: "paused" });
    a.send({ t: "pres", to: "nosuchuser", s: "typing" }); // never an error
    // bob2 was offline: nothing was kept for it.
    const b2 = await rawLogin(srv, kb2);
    await barrier(b2);
    await barrier(a);
    expect(b2.received.filter((x) => x.t === "pres")).toEqual([]);
    expect(a.received.filter((x) => x.t === "pres" || x.t === "err")).toEqual([]);
    a.send({ t: "iq", id: 3, op: "presence", a: { u: "nosuchuser" } });
    expect(await a.expect("res")).toMatchObject({ id: 3, ok: false, e: "unknown_user" });
    for (const c of [a, b1, b2]) c.end();
  }, 30_000);

  test("the SDK refuses a message larger than the server's frame limit itself, and the session stays up", async () => {
    const a = await srv.client(await srv.newDevice("biga"));
    await srv.newDevice("bigb");
    const ca = collect(a);
    expect(a.hello!.mf).toBe(65536);
    await expect(a.send("bigb", new Uint8Array(70_000))).rejects.toMatchObject({ code: "frame_too_large" });
    const ok = await a.send("bigb", "small");
    expect(ok.seq).toBeGreaterThan(0);
    expect(ca.closes).toEqual([]);
    expect(a.unsent).toBe(0);
    await a.close();
  }, 30_000);
});

describe("device-set checks", () => {
  test("missing, extra, duplicate and unknown recipients are refused with details", async () => {
    const A = "dsa";
    const B = "dsb";
    const ka1 = await srv.newDevice(A);
    await srv.newDevice(A);
    const kb1 = await srv.newDevice(B);
    await srv.newDevice(B);
    srv.addUser("dsnobody"); // an account without devices
    const a1 = await rawLogin(srv, ka1);
    const b1 = await rawLogin(srv, kb1);
    const errFor = (id: string) => a1.expect((s) => s.t === "err" && s.id === id) as Promise<any>;

    a1.send(msgFrame("x-missing", B, [1], [2]));
    expect(await errFor("x-missing")).toMatchObject({ e: "devices_mismatch", x: { missing: { [B]: [2] }, extra: {} } });
    a1.send(msgFrame("x-extra", B, [1, 2, 3], [2]));
    expect(await errFor("x-extra")).toMatchObject({ e: "devices_mismatch", x: { missing: {}, extra: { [B]: [3] } } });
    a1.send({ t: "msg", id: "x-dup", to: B, p: [[1, enc("a")], [1, enc("b")], [2, enc("c")]], s: [[2, enc("s")]] });
    expect(await errFor("x-dup")).toMatchObject({ e: "devices_mismatch", x: { missing: {}, extra: { [B]: [1] } } });
    a1.send(msgFrame("x-nosync", B, [1, 2]));
    expect(await errFor("x-nosync")).toMatchObject({ e: "devices_mismatch", x: { missing: { [A]: [2] }, extra: {} } });
    a1.send(msgFrame("x-selfsync", B, [1, 2], [1, 2]));
    expect(await errFor("x-selfsync")).toMatchObject({ e: "devices_mismatch", x: { missing: {}, extra: { [A]: [1] } } });
    a1.send(msgFrame("x-both", B, [2, 5], []));
    const both = await errFor("x-both");
    expect(both.x).toEqual({ missing: { [B]: [1], [A]: [2] }, extra: { [B]: [5] } });
    a1.send(msgFrame("x-unknown", "nosuchuser", [1]));
    expect(await errFor("x-unknown")).toMatchObject({ e: "unknown_user" });
    a1.send(msgFrame("x-nodev", "dsnobody", [1], [2]));
    expect(await errFor("x-nodev")).toMatchObject({ e: "no_devices" });

    // A refused id is not remembered: resent correctly it is accepted and delivered.
    a1.send(msgFrame("x-missing", B, [1, 2], [2]));
    expect(await a1.expect("sent")).toMatchObject({ id: "x-missing", to: B });
    const got = (await b1.expect("msg")) as MsgS;
    expect(got.id).toBe("x-missing");
    await barrier(b1);
    expect(msgs(b1).length).toBe(1); // none of the refused ones reached bob
    a1.end();
    b1.end();
  }, 30_000);

  test("the SDK retries by itself after a device was added on either side", async () => {
    const C = "carol";
    const D = "dave";
    const kc1 = await srv.newDevice(C);
    const kd1 = await srv.newDevice(D);
    const c1 = await srv.client(kc1);
    const d1 = await srv.client(kd1, { tlsTransport: true });
    const cd1 = collect(d1);
    const first = await c1.send(D, "one"); // caches dave = [1], carol = [1]
    // dave enrolls a second device and carol a second one; carol1's caches are now stale.
    const kd2 = await srv.newDevice(D);
    const kc2 = await srv.newDevice(C);
    const d2 = await rawLogin(srv, kd2, "tls");
    const c2 = await rawLogin(srv, kc2);
    const second = await c1.send(D, (d, acct) => enc(`two for ${acct}/${d}`));
    expect(second.seq).toBeGreaterThan(first.seq);
    const m = (await d2.expect("msg")) as MsgS;
    expect([m.id, dec(m.p), m.seq]).toEqual([second.id, `two for ${D}/2`, second.seq]);
    const sync = (await c2.expect("msg")) as MsgS;
    expect([sync.id, sync.sync, dec(sync.p)]).toEqual([second.id, true, `two for ${C}/2`]);
    await waitFor(() => cd1.messages.length === 2, "dave1 gets both");
    expect(cd1.messages.map((x) => dec(x.payload))).toEqual(["one", `two for ${D}/1`]);
    await c1.close();
    await d1.close();
    d2.end();
    c2.end();
  }, 30_000);
});

test("dedup: a resent msg id gets the original sent and is delivered once", async () => {
  const A = "dupa";
  const B = "dupb";
  const ka = await srv.newDevice(A);
  const kb = await srv.newDevice(B);
  const a = await rawLogin(srv, ka);
  const b = await rawLogin(srv, kb, "tls");
  const dups0 = await srv.metric("switchboard_messages_duplicate_total");
  a.send(msgFrame("d1", B, [1]));
  const s1 = await a.expect("sent");
  a.send(msgFrame("d1", B, [1]));
  const s2 = await a.expect("sent");
  expect(s2).toEqual(s1);
  // Again from a new connection of the same device (a client that reconnected without seeing `sent`).
  a.end();
  const a2 = await rawLogin(srv, ka);
  a2.send(msgFrame("d1", B, [1]));
  expect(await a2.expect("sent")).toEqual(s1);
  // A fresh id after it: queue order means any duplicate of d1 would have arrived first.
  a2.send(msgFrame("d2", B, [1]));
  const s3 = await a2.expect("sent");
  expect(s3.seq).toBeGreaterThan(s1.seq);
  await b.expect((s) => s.t === "msg" && s.id === "d2");
  expect(msgs(b).map((m) => [m.id, m.seq])).toEqual([["d1", s1.seq], ["d2", s3.seq]]);
  expect(await srv.metric("switchboard_messages_duplicate_total")).toBe(dups0 + 2);
  a2.end();
  b.end();
}, 30_000);

test("dedup is per sending device; notes to self go to the other devices as sync copies", async () => {
  const ka1 = await srv.newDevice("sela");
  const ka2 = await srv.newDevice("sela");
  const ka3 = await srv.newDevice("sela");
  const kb = await srv.newDevice("selb");
  const [a1, a2, a3, b] = await Promise.all([rawLogin(srv, ka1), rawLogin(srv, ka2, "tls"), rawLogin(srv, ka3), rawLogin(srv, kb)]);
  // The same client id from two devices: two messages.
  a1.send(msgFrame("same", "selb", [1], [2, 3]));
  const s1 = await a1.expect("sent");
  a2.send(msgFrame("same", "selb", [1], [1, 3]));
  const s2 = await a2.expect("sent");
  expect(s2.seq).toBeGreaterThan(s1.seq);
  await b.expect((x) => x.t === "msg" && x.fd === 2);
  expect(msgs(b).map((m) => [m.id, m.fd])).toEqual([["same", 1], ["same", 2]]);
  // Note to self: p addresses the other own devices, no s; every copy is a sync copy.
  a1.send({ t: "msg", id: "note", to: "sela", p: [[2, enc("n2")], [3, enc("n3")]] });
  const sn = await a1.expect("sent");
  expect(sn).toMatchObject({ id: "note", to: "sela" });
  for (const [c, d] of [[a2, 2], [a3, 3]] as const) {
    const m = (await c.expect((x) => x.t === "msg" && x.id === "note")) as MsgS;
    expect([m.from, m.fd, m.to, m.sync, dec(m.p), m.seq]).toEqual(["sela", 1, "sela", true, `n${d}`, sn.seq]);
  }
  // Addressing oneself, or adding sync copies to a note to self, is refused.
  a1.send({ t: "msg", id: "note2", to: "sela", p: [[1, enc("x")], [2, enc("x")], [3, enc("x")]] });
  expect(await a1.expect("err")).toMatchObject({ e: "devices_mismatch", id: "note2", x: { extra: { sela: [1] } } });
  a1.send({ t: "msg", id: "note3", to: "sela", p: [[2, enc("x")], [3, enc("x")]], s: [[2, enc("x")]] });
  expect(await a1.expect("err")).toMatchObject({ e: "devices_mismatch", id: "note3" });
  for (const c of [a1, a2, a3, b]) c.end();
}, 30_000);

test("acks of other devices' items and of unknown ids are ignored", async () => {
  const ka = await srv.newDevice("acka");
  const kb1 = await srv.newDevice("ackb");
  const kb2 = await srv.newDevice("ackb");
  const a = await rawLogin(srv, ka);
  const b1 = await rawLogin(srv, kb1);
  const b2 = await rawLogin(srv, kb2);
  a.send(msgFrame("ak", "ackb", [1, 2]));
  await a.expect("sent");
  const m1 = (await b1.expect("msg")) as MsgS;
  const m2 = (await b2.expect("msg")) as MsgS;
  expect(m1.q).not.toBe(m2.q);
  // bob2 acks bob1's copy, and ids that exist nowhere.
  b2.send({ t: "ack", q: [m1.q, 1, 2 ** 53 - 1] });
  await barrier(b2);
  await barrier(a);
  expect(rcpts(a)).toEqual([]); // no `dlv` came of it
  b1.end();
  await b1.waitClosed();
  const b1again = await rawLogin(srv, kb1);
  const again = (await b1again.expect("msg")) as MsgS;
  expect([again.q, again.id]).toEqual([m1.q, "ak"]); // still queued for bob1
  // Their own acks do count.
  b1again.send({ t: "ack", q: [again.q] });
  b2.send({ t: "ack", q: [m2.q] });
  const dlv = [(await a.expect("rcpt")) as Rcpt, (await a.expect("rcpt")) as Rcpt];
  expect(dlv.map((r) => r.d).sort()).toEqual([1, 2]);
  for (const c of [a, b1again, b2]) c.end();
}, 30_000);

describe("offline delivery", () => {
  // [the sender's transport, the recipient's first, second and third connection]
  const layouts: [T, T, T, T][] = [["tcp", "tcp", "tls", "tcp"], ["ws", "ws", "ws", "ws"], ["tcp", "ws", "tls", "wss"]];
  for (const [ts, t1, t2, t3] of layouts) test(`queued messages arrive in order; unacked ones again on the next connection; acked ones never (${ts} to ${t1}, ${t2}, ${t3})`, async () => {
    const A = `offa-${ts}-${t1}`;
    const B = `offb-${ts}-${t1}`;
    const ka = await srv.newDevice(A);
    const kb = await srv.newDevice(B);
    const alice = await srv.client(ka, { transport: ts });
    const ca = collect(alice);
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await alice.send(B, `offline ${i}`));
    expect(sent.map((s) => s.seq)).toEqual([...sent.map((s) => s.seq)].sort((x, y) => x - y));

    const b1 = await rawLogin(srv, kb, t1);
    await waitFor(() => msgs(b1).length === 5, "5 queued messages");
    await barrier(b1);
    const first = msgs(b1);
    expect(first.map((m) => dec(m.p))).toEqual([0, 1, 2, 3, 4].map((i) => `offline ${i}`));
    expect(first.map((m) => m.seq)).toEqual(sent.map((s) => s.seq));
    expect(first.map((m) => m.id)).toEqual(sent.map((s) => s.id));
    const qs = first.map((m) => m.q);
    expect([...qs].sort((x, y) => x - y)).toEqual(qs);
    b1.end(); // never acked
    await b1.waitClosed();

    const b2 = await rawLogin(srv, kb, t2);
    await waitFor(() => msgs(b2).length === 5, "redelivery");
    await barrier(b2);
    const again = msgs(b2);
    expect(again.map((m) => [m.q, m.id, m.seq])).toEqual(first.map((m) => [m.q, m.id, m.seq]));
    b2.send({ t: "ack", q: again.map((m) => m.q) });
    await barrier(b2);
    b2.end();
    await b2.waitClosed();

    const b3 = await rawLogin(srv, kb, t3);
    await barrier(b3); // queued items are pushed right after `ready`, before the pong
    expect(msgs(b3)).toEqual([]);
    b3.end();
    // alice hears about the five deliveries (from the acks on b2's connection).
    await waitFor(() => ca.receipts.filter((r) => r.kind === "dlv").length === 5, "5 dlv receipts");
    await alice.close();
  }, 30_000);

  test("window 4: a device that does not ack receives exactly 4, more as it acks, all 20 in order", async () => {
    const A = "wina";
    const B = "winb";
    const ka = await srvW.newDevice(A);
    const kb = await srvW.newDevice(B);
    const a = await rawLogin(srvW, ka);
    for (let i = 0; i < 20; i++) a.send(msgFrame(`w${i}`, B, [1]));
    const sents = [];
    for (let i = 0; i < 20; i++) sents.push(await a.expect("sent"));
    expect(sents.map((s) => s.id)).toEqual(Array.from({ length: 20 }, (_, i) => `w${i}`));

    const b = await rawLogin(srvW, kb);
    let acked = 0;
    for (const batch of [4, 1, 3, 2, 4, 4, 2]) {
      await waitFor(() => msgs(b).length >= Math.min(20, acked + 4), `${acked + 4} messages`);
      await barrier(b);
      expect(msgs(b).length).toBe(Math.min(20, acked + 4)); // exactly a window's worth in flight
      const toAck = msgs(b).slice(acked, acked + batch);
      b.send({ t: "ack", q: toAck.map((m) => m.q) });
      acked += batch;
    }
    await barrier(b);
    expect(msgs(b).map((m) => m.id)).toEqual(Array.from({ length: 20 }, (_, i) => `w${i}`));
    const seqs = msgs(b).map((m) => m.seq);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]!).toBeGreaterThan(seqs[i - 1]!);
    a.end();
    b.end();
  }, 30_000);

  test("window 4 also holds for live deliveries to a connected device", async () => {
    const A = "livea";
    const B = "liveb";
    const ka = await srvW.newDevice(A);
    const kb = await srvW.newDevice(B);
    const a = await rawLogin(srvW, ka);
    const b = await rawLogin(srvW, kb, "tls");
    for (let i = 0; i < 20; i++) a.send(msgFrame(`l${i}`, B, [1]));
    for (let i = 0; i < 20; i++) await a.expect("sent");
    await barrier(b);
    expect(msgs(b).map((m) => m.id)).toEqual(["l0", "l1", "l2", "l3"]);
    // Acks of one at a time each open exactly one slot.
    for (let n = 4; n < 20; n++) {
      b.send({ t: "ack", q: [msgs(b)[n - 4]!.q] });
      await barrier(b);
      expect(msgs(b).length).toBe(n + 1);
    }
    expect(msgs(b).map((m) => m.id)).toEqual(Array.from({ length: 20 }, (_, i) => `l${i}`));
    a.end();
    b.end();
  }, 30_000);
});

// Last in the file: it restarts the server (ports change).
test("messages accepted before kill -9 are delivered after a restart", async () => {
  const A = "crasha";
  const B = "crashb";
  const ka = await srv.newDevice(A);
  const kb = await srv.newDevice(B);
  const a = await rawLogin(srv, ka);
  for (let i = 0; i < 3; i++) a.send(msgFrame(`k${i}`, B, [1]));
  const before = [];
  for (let i = 0; i < 3; i++) before.push(await a.expect("sent")); // durable: committed to SQLite
  await srv.kill9();
  await a.waitClosed();
  await srv.restart();

  const b = await rawLogin(srv, kb, "tls");
  await waitFor(() => msgs(b).length === 3, "the 3 messages after the restart");
  expect(msgs(b).map((m) => [m.id, m.seq, dec(m.p)])).toEqual(before.map((s) => [s.id, s.seq, `${s.id}|${B}|1`]));
  b.send({ t: "ack", q: msgs(b).map((m) => m.q) });

  // Sequence numbers are never reused across the crash; alice hears of the deliveries.
  const a2 = await rawLogin(srv, ka);
  a2.send(msgFrame("k3", B, [1]));
  const after = await a2.expect("sent");
  expect(after.seq).toBeGreaterThan(before[2]!.seq);
  const dlv = [];
  for (let i = 0; i < 3; i++) dlv.push((await a2.expect((s) => s.t === "rcpt" && s.k === "dlv")) as Rcpt);
  expect(dlv.map((r) => r.id).sort()).toEqual(["k0", "k1", "k2"]);
  await b.expect((s) => s.t === "msg" && s.id === "k3");
  a2.end();
  b.end();
}, 30_000);

/**
 * Protocol errors over real sockets (docs/PROTOCOL.md §2.3, §4.1, §7): which
 * frames are fatal and which leave the connection usable, error ids, state
 * checks, version negotiation, the frame-size limit, the error budget and
 * stream reassembly.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { encodeBody, encodeFrame } from "../../src/protocol/codec.ts";
import { frame } from "../../src/protocol/frame.ts";
import { startServer, type RawConn, type TestServer, type Transport } from "../helpers/harness.ts";
import { barrier, enc, expectClosedWith, msgFrame, proof, rawLogin } from "./util.ts";

const MF = 1024;
let srv: TestServer;
let alice: Awaited<ReturnType<TestServer["newDevice"]>>;

beforeAll(async () => {
  srv = await startServer({ args: ["--limits-max-frame", String(MF)] });
  alice = await srv.newDevice("alice");
  await srv.newDevice("bob");
});
afterAll(() => srv?.cleanup());

const hex = (s: string) => Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!.map((b) => parseInt(b, 16)));
/** A `ping` body whose `n` is given as raw msgpack bytes (to use encodings msgpackr would not write). */
const pingWithN = (nHex: string) => frame(hex(`82 a1 74 a4 70696e67 a1 6e ${nHex}`));
/** Just a 4-byte length header announcing `n` body bytes. */
function header(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

async function helloed(transport: Transport = "tcp"): Promise<RawConn> {
  const c = await srv.raw(transport);
  await c.hello();
  return c;
}

/** Sends one frame (bytes or stanza) and expects `err` with this code (and id, when given). */
async function expectErr(c: RawConn, what: Uint8Array | object, code: string, id?: string | number): Promise<void> {
  if (what instanceof Uint8Array) c.sendBytes(what);
  else c.send(what);
  const e = await c.expect("err");
  expect({ e: e.e, id: e.id }).toEqual({ e: code, id });
}

/** A ping stanza padded with an unknown field so that its body is exactly `size` bytes. */
function pingOfSize(size: number): Uint8Array {
  for (let k = 0; k < size; k++) {
    const body = encodeBody({ t: "ping", n: 77, pad: "x".repeat(k) });
    if (body.length === size) return frame(new Uint8Array(body));
  }
  throw new Error(`no padding gives a ${size}-byte ping`);
}

describe("frame size", () => {
  test("a length above mf: err frame_too_large, close frame_too_large, socket closed (before any body byte)", async () => {
    const c = await helloed();
    expect(c.serverHello!.mf).toBe(MF);
    c.sendBytes(header(2000)); // no body follows
    expect((await c.expect("err")).e).toBe("frame_too_large");
    await expectClosedWith(c, "frame_too_large");
  });

  test("also as the very first bytes, and with the header split across writes", async () => {
    const c1 = await srv.raw();
    c1.sendBytes(header(MF + 1));
    expect((await c1.expect("err")).e).toBe("frame_too_large");
    await expectClosedWith(c1, "frame_too_large");

    const c2 = await helloed("tls");
    const h = header(0x7fffffff);
    c2.sendBytes(h.subarray(0, 2));
    await Bun.sleep(50); // so that the halves most likely arrive in separate reads (either way must work)
    expect(c2.closed).toBe(false);
    c2.sendBytes(h.subarray(2));
    expect((await c2.expect("err")).e).toBe("frame_too_large");
    await expectClosedWith(c2, "frame_too_large");
  });

  test("a body of exactly mf bytes is accepted; mf + 1 is not", async () => {
    const c = await helloed();
    c.sendBytes(pingOfSize(MF));
    expect(await c.expect("pong")).toMatchObject({ n: 77 });
    c.sendBytes(pingOfSize(MF + 1));
    expect((await c.expect("err")).e).toBe("frame_too_large");
    await expectClosedWith(c, "frame_too_large");
  });
});

describe("non-fatal errors leave the connection usable", () => {
  // Over WS each frame's body is one binary message (RawConn cuts what it is given into frames).
  test("bad bodies, bad kinds and bad fields before login (TCP, TLS, WS and WSS)", async () => {
    for (const transport of ["tcp", "tls", "ws", "wss"] as const) {
      const c = await helloed(transport);
      await expectErr(c, frame(new Uint8Array(0)), "bad_frame"); // empty body
      await expectErr(c, frame(hex("c1")), "bad_frame"); // never-used msgpack byte
      await expectErr(c, frame(hex("82 a1 74")), "bad_frame"); // truncated map
      await expectErr(c, frame(new Uint8Array([...encodeBody({ t: "ping", n: 1 }), 0x00])), "bad_frame"); // trailing byte
      await expectErr(c, encodeFrame([1, 2, 3]), "bad_frame"); // not a map
      await expectErr(c, encodeFrame("ping" as unknown as object), "bad_frame");
      await expectErr(c, frame(hex("c0")), "bad_frame"); // nil
      await expectErr(c, { n: 1 }, "bad_field"); // no t
      await expectErr(c, { t: 5 }, "bad_field"); // t not a string
      await expectErr(c, { t: "bogus", id: "z1" }, "unknown_kind", "z1");
      await expectErr(c, { t: "sent", id: 12, to: "bob", seq: 1, ts: 1 }, "unknown_kind", 12); // a server-only kind
      for (const t of ["__proto__", "constructor", "toString", "hasOwnProperty"]) await expectErr(c, { t }, "unknown_kind");
      await expectErr(c, pingWithN("cb 3ff8000000000000"), "bad_field"); // 1.5
      await expectErr(c, pingWithN("d0 ff"), "bad_field"); // -1
      await expectErr(c, pingWithN("cf 0000000100000000"), "bad_field"); // 2^32: above ping.n's limit
      await expectErr(c, { t: "auth", u: "alice", d: 1, sig: "x".repeat(64) }, "bad_field"); // str where bin is required
      await expectErr(c, { t: "auth", u: "Alice", d: 1, sig: new Uint8Array(64) }, "bad_field"); // not an account name
      await expectErr(c, { t: "auth", u: "alice", d: 0, sig: new Uint8Array(64) }, "bad_field"); // device 0
      await expectErr(c, { t: "hello", v: [] }, "bad_field");
      // Integers in any encoding, integral floats, nil optionals and unknown fields are fine.
      c.sendBytes(pingWithN("cb 4014000000000000")); // 5.0
      expect(await c.expect("pong")).toEqual({ t: "pong", n: 5 });
      c.sendBytes(pingWithN("cf 0000000000000006")); // uint64 6
      expect(await c.expect("pong")).toEqual({ t: "pong", n: 6 });
      c.sendBytes(pingWithN("d3 0000000000000007")); // int64 7
      expect(await c.expect("pong")).toEqual({ t: "pong", n: 7 });
      c.sendBytes(pingWithN("c0")); // nil: absent
      expect(await c.expect("pong")).toEqual({ t: "pong" });
      c.send({ t: "ping", n: 8, future: { x: [1, 2] } });
      expect(await c.expect("pong")).toEqual({ t: "pong", n: 8 });
      // Still usable for what the connection is for: log in.
      const h = c.serverHello!;
      c.send({ t: "auth", u: "alice", d: alice.device, sig: proof(alice, "auth", h.sid, h.nonce, "alice", alice.device) });
      await c.expect("ready");
      expect(c.closed).toBe(false);
      c.end();
    }
  });

  test("stanzas that need a session are refused before login, with their id, and the login still works", async () => {
    const c = await helloed();
    await expectErr(c, msgFrame("early", "bob", [1]), "not_authenticated", "early");
    await expectErr(c, { t: "iq", id: 9, op: "devices" }, "not_authenticated", 9);
    await expectErr(c, { t: "ack", q: [1] }, "not_authenticated");
    await expectErr(c, { t: "read", u: "bob", seq: 1 }, "not_authenticated");
    await expectErr(c, { t: "pres", to: "bob", s: "typing" }, "not_authenticated");
    await expectErr(c, { t: "hello", v: [1] }, "not_authenticated"); // a second hello
    const h = c.serverHello!;
    c.send({ t: "auth", u: "alice", d: alice.device, sig: proof(alice, "auth", h.sid, h.nonce, "alice", alice.device) });
    await c.expect("ready");
    c.send(msgFrame("later", "bob", [1]));
    expect(await c.expect("sent")).toMatchObject({ id: "later" });
    c.end();
  });

  for (const transport of ["tls", "ws"] as const) test(`bad fields after login carry the stanza's id; login stanzas are already_authenticated (${transport})`, async () => {
    const c = await rawLogin(srv, alice, transport);
    await expectErr(c, { t: "msg", id: "b1", to: 5, p: [[1, enc("x")]] }, "bad_field", "b1");
    await expectErr(c, { t: "msg", id: "b2", to: "bob", p: [[1, "text not bin"]] }, "bad_field", "b2");
    await expectErr(c, { t: "msg", id: "b3", to: "bob", p: [[0, enc("x")]] }, "bad_field", "b3");
    // An empty `p` is answered by the rules, not the validator: bob has a device, so devices_mismatch.
    await expectErr(c, { t: "msg", id: "b4", to: "bob", p: [] }, "devices_mismatch", "b4");
    await expectErr(c, { t: "msg", id: "b5", to: "bob", p: [[1, enc("x"), 3, 4]] }, "bad_field", "b5");
    await expectErr(c, { t: "msg", id: "b5k", to: "bob", p: [[1, enc("x"), -3]] }, "bad_field", "b5k");
    await expectErr(c, { t: "msg", id: "x".repeat(65), to: "bob", p: [[1, enc("x")]] }, "bad_field", "x".repeat(65));
    await expectErr(c, { t: "iq", id: 7, op: 5 }, "bad_field", 7);
    await expectErr(c, { t: "iq", id: 2 ** 32, op: "devices" }, "bad_field", 2 ** 32);
    await expectErr(c, { t: "ack", q: [] }, "bad_field");
    await expectErr(c, { t: "ack", q: ["1"] }, "bad_field");
    await expectErr(c, frame(hex("83 a1 74 a4 72656164 a1 75 a3 626f62 a3 736571 cf 0020000000000000")), "bad_field"); // read seq 2^53
    await expectErr(c, { t: "pres", to: "bob", s: "dancing" }, "bad_field");
    await expectErr(c, { t: "hello", v: [1] }, "already_authenticated");
    await expectErr(c, { t: "auth", u: "alice", d: 1, sig: new Uint8Array(64) }, "already_authenticated");
    await expectErr(c, { t: "link", u: "alice", pk: new Uint8Array(32), sig: new Uint8Array(64) }, "already_authenticated");
    // iq failures are answers, not errors.
    c.send({ t: "iq", id: 30, op: "no.such.op" });
    expect(await c.expect("res")).toMatchObject({ id: 30, ok: false, e: "unknown_op" });
    c.send({ t: "iq", id: 31, op: "devices", a: { u: 5 } });
    expect(await c.expect("res")).toMatchObject({ id: 31, ok: false, e: "bad_field" });
    // read seq 2^53 - 1 is the largest valid integer.
    c.sendBytes(frame(hex("83 a1 74 a4 72656164 a1 75 a3 626f62 a3 736571 cf 001fffffffffffff")));
    await barrier(c);
    expect(c.received.filter((s) => s.t === "err").length).toBe(16);
    c.send(msgFrame("ok1", "bob", [1]));
    expect(await c.expect("sent")).toMatchObject({ id: "ok1" });
    c.end();
  });

  // Over WS, "split" and "many in one write" are the client's: RawConn sends each frame once it is whole.
  for (const transport of ["tcp", "ws"] as const) test(`frames split byte by byte and many frames in one write are reassembled (${transport})`, async () => {
    const c = await srv.raw(transport);
    const hello = encodeFrame({ t: "hello", v: [1] });
    for (const b of hello) {
      c.sendBytes(new Uint8Array([b]));
      await Bun.sleep(1);
    }
    await c.expect("hello");
    const many = [];
    for (let n = 100; n < 150; n++) many.push(...encodeFrame({ t: "ping", n }));
    c.sendBytes(new Uint8Array(many));
    for (let n = 100; n < 150; n++) expect(await c.expect("pong")).toEqual({ t: "pong", n });
    c.end();
  });
});

describe("fatal errors", () => {
  for (const transport of ["tcp", "ws"] as const) test(`a first frame other than hello: err hello_required, close protocol_error (${transport})`, async () => {
    for (const first of [{ t: "ping", n: 1 }, msgFrame("m", "bob", [1]), { t: "auth", u: "alice", d: 1, sig: new Uint8Array(64) }]) {
      const c = await srv.raw(transport);
      c.send(first);
      expect((await c.expect("err")).e).toBe("hello_required");
      await expectClosedWith(c, "protocol_error");
    }
  });

  for (const transport of ["tcp", "ws"] as const) test(`an invalid first frame is only an error; a hello after it works (${transport})`, async () => {
    const c = await srv.raw(transport);
    await expectErr(c, frame(hex("c1")), "bad_frame");
    await expectErr(c, { t: "bogus" }, "unknown_kind");
    const h = await c.hello();
    expect(h.v).toBe(1);
    c.end();
  });

  for (const transport of ["tls", "ws"] as const) test(`version negotiation: no common version closes with unsupported_version; a common one is picked (${transport})`, async () => {
    const c = await srv.raw(transport);
    c.send({ t: "hello", v: [2, 3] });
    expect((await c.expect("err")).e).toBe("unsupported_version");
    await expectClosedWith(c, "unsupported_version");
    const ok = await srv.raw();
    ok.send({ t: "hello", v: [9, 1, 4], ua: "future/9" });
    expect((await ok.expect("hello")).v).toBe(1);
    ok.end();
  });

  for (const transport of ["tcp", "ws"] as const) test(`the error budget: 100 invalid frames are tolerated, the 101st closes with protocol_error (${transport})`, async () => {
    const errors0 = await srv.metric("switchboard_protocol_errors_total");
    const c = await helloed(transport);
    const bad = frame(hex("c1"));
    const burst = new Uint8Array(bad.length * 100);
    for (let i = 0; i < 100; i++) burst.set(bad, i * bad.length);
    c.sendBytes(burst);
    await barrier(c);
    expect(c.received.filter((s) => s.t === "err").length).toBe(100);
    expect(c.closed).toBe(false);
    c.send({ t: "nope" });
    // The 101st invalid frame is answered, then the budget is spent.
    await c.expect((s) => s.t === "err" && s.e === "unknown_kind");
    await c.expect((s) => s.t === "err" && s.e === "too_many_errors");
    await expectClosedWith(c, "protocol_error");
    expect(await srv.metric("switchboard_protocol_errors_total")).toBeGreaterThanOrEqual(errors0 + 101);
  });

  for (const transport of ["tcp", "ws"] as const) test(`a client close is answered and the connection ends (${transport})`, async () => {
    const c = await rawLogin(srv, alice, transport);
    const before = await srv.metric("switchboard_closes_total", '{reason="client_quit"}');
    c.send({ t: "close", r: "client_quit" });
    await c.waitClosed();
    expect(await srv.metric("switchboard_closes_total", '{reason="client_quit"}')).toBe(before + 1);
  });
});

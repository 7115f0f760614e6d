/**
 * Issue 19, found by an independent client written from docs/PROTOCOL.md
 * alone: each case over raw frames, as that client sent them.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, type Socket as NetSocket } from "node:net";
import { decodeBody, encodeBody, encodeFrame } from "../../src/protocol/codec.ts";
import { frame, FrameDecoder } from "../../src/protocol/frame.ts";
import { LIMITS, type ServerStanza } from "../../src/protocol/stanzas.ts";
import { generateDeviceKey, keyFromFile, type KeyFile } from "../../src/client/keys.ts";
import { startServer, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, enc, msgFrame, msgs, proof, rawLogin, rcpts } from "./util.ts";

let srv: TestServer;
let alice: KeyFile;
let bob: KeyFile;

beforeAll(async () => {
  srv = await startServer();
  alice = await srv.newDevice("alice");
  bob = await srv.newDevice("bob");
});
afterAll(() => srv?.cleanup());

const hex = (s: string) => Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!.map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** A body with the bytes of `placeholder` (ASCII, found once) replaced by `bytes` of the same length. */
function patched(stanza: object, placeholder: string, bytes: string): Uint8Array {
  const body = encodeBody(stanza);
  const i = toHex(body).indexOf(toHex(enc(placeholder)));
  if (i < 0 || i % 2) throw new Error("placeholder not found");
  const out = Uint8Array.from(body);
  out.set(hex(bytes), i / 2);
  return frame(out);
}

async function helloed(): Promise<RawConn> {
  const c = await srv.raw();
  await c.hello();
  return c;
}

async function errOf(c: RawConn, bytes: Uint8Array): Promise<{ e: string; id?: string | number }> {
  c.sendBytes(bytes);
  const e = await c.expect("err");
  return { e: e.e, id: e.id };
}

describe("strings must be valid UTF-8 (§3)", () => {
  test("two ids differing only in invalid bytes: both refused bad_field, nothing delivered, and the connection stays", async () => {
    const a = await rawLogin(srv, alice);
    const b = await rawLogin(srv, bob);
    for (const bad of ["fffe41", "fffd41"]) {
      expect(await errOf(a, patched(msgFrame("XYZ", "bob", [bob.device]), "XYZ", bad))).toEqual({ e: "bad_field", id: undefined });
    }
    // In a map key, and deep inside an iq argument, too.
    expect((await errOf(a, patched({ t: "ping", KEY: 1 }, "KEY", "c0ffee"))).e).toBe("bad_field");
    expect((await errOf(a, patched({ t: "iq", id: 3, op: "devices", a: { u: "bob", z: ["QQ"] } }, "QQ", "ed a0"))).e).toBe("bad_field");
    await barrier(b);
    expect(msgs(b)).toEqual([]);
    // Valid non-ASCII ids are fine, and two of them are two messages.
    for (const id of ["идентификатор-1", "идентификатор-2"]) {
      a.send(msgFrame(id, "bob", [bob.device]));
      expect((await a.expect("sent")).id).toBe(id);
      await b.expect((s) => s.t === "msg" && s.id === id);
    }
    a.end();
    b.end();
  });
});

describe("integers the decoder accepts can be encoded back (§3)", () => {
  test("ack with a 64-bit id before login: err bad_field (no crash, no close), and the login still works", async () => {
    const c = await helloed();
    for (const big of ["cf 7fffffffffffffff", "cf ffffffffffffffff", "d3 c000000000000000"]) {
      // {t: "ack", q: [1], id: <big>}
      expect(await errOf(c, frame(hex(`83 a1 74 a3 61636b a1 71 91 01 a2 6964 ${big}`)))).toEqual({ e: "bad_field", id: undefined });
    }
    // An id of exactly 2^53 - 1 is an integer like any other: echoed.
    expect(await errOf(c, frame(hex("83 a1 74 a3 61636b a1 71 91 01 a2 6964 cf 001fffffffffffff")))).toEqual({ e: "not_authenticated", id: 2 ** 53 - 1 });
    expect(c.closed).toBe(false);
    await c.login(alice);
    c.end();
  });
});

describe("err echoes an id only when it is a string or a number (§2.3)", () => {
  test("UNAUTHENTICATED and LINK_WAIT: map and array ids are not echoed; a body nested too deep is bad_frame", async () => {
    const c = await helloed();
    for (const id of [{ a: 1 }, [1, 2], "x".repeat(LIMITS.echoId + 1)]) {
      c.send({ t: "read", u: "bob", seq: 1, id });
      const e = await c.expect("err");
      expect({ e: e.e, id: e.id }).toEqual({ e: "not_authenticated", id: undefined });
    }
    // {t: "ack", q: [1], id: 10 000 nested one-entry maps}
    const deep = new Uint8Array(10_000 * 3 + 1);
    for (let i = 0; i < 10_000; i++) deep.set([0x81, 0xa1, 0x6b], i * 3);
    deep[deep.length - 1] = 0xc0;
    const body = Uint8Array.from([...hex("83 a1 74 a3 61636b a1 71 91 01 a2 6964"), ...deep]);
    c.sendBytes(frame(body)); // above the pre-login bound: answered as too large, which closes
    expect((await c.expect("err")).e).toBe("frame_too_large");
    await c.waitClosed();

    const w = await helloed();
    const key = generateDeviceKey();
    w.send({ t: "link", u: "alice", pk: key.publicKey, sig: proof(key, "link", w.serverHello!.sid, w.serverHello!.nonce, "alice", 0) });
    await w.expect("linkcode");
    w.send({ t: "ack", q: [1], id: { nested: { map: [1] } } });
    const e = await w.expect("err");
    expect({ e: e.e, id: e.id }).toEqual({ e: "not_authenticated", id: undefined });
    // Deep nesting within the pre-login bound: refused by the decoder, the connection stays.
    const d2 = new Uint8Array(40 * 3 + 1);
    for (let i = 0; i < 40; i++) d2.set([0x81, 0xa1, 0x6b], i * 3);
    d2[d2.length - 1] = 0xc0;
    expect(await errOf(w, frame(Uint8Array.from([...hex("83 a1 74 a3 61636b a1 71 91 01 a2 6964"), ...d2])))).toEqual({ e: "bad_frame", id: undefined });
    await barrier(w);
    w.end();
  });
});

describe("repeated map keys and extension types (§3)", () => {
  test("a repeated key is bad_frame, wherever it is; an extension type is bad_frame", async () => {
    const c = await rawLogin(srv, alice);
    // {t: "ping", t: "msg"}
    expect(await errOf(c, frame(hex("82 a1 74 a4 70696e67 a1 74 a3 6d7367")))).toEqual({ e: "bad_frame", id: undefined });
    // {t: "iq", id: 4, op: "devices", a: {u: "bob", u: "alice"}}
    expect((await errOf(c, frame(hex("84 a1 74 a2 6971 a2 6964 04 a2 6f70 a7 64657669636573 a1 61 82 a1 75 a3 626f62 a1 75 a5 616c696365"))))).toEqual({ e: "bad_frame", id: undefined });
    // {t: "ping", n: fixext1} and ext8
    expect((await errOf(c, frame(hex("82 a1 74 a4 70696e67 a1 6e d4 01 07")))).e).toBe("bad_frame");
    expect((await errOf(c, frame(hex("82 a1 74 a4 70696e67 a1 6e c7 01 05 07")))).e).toBe("bad_frame");
    // An integer map key.
    expect((await errOf(c, frame(hex("82 a1 74 a4 70696e67 01 02")))).e).toBe("bad_frame");
    await barrier(c);
    c.end();
  });
});

describe("an empty p is answered by the rules (§6.2)", () => {
  test("no_devices for an account without devices (and a note to self from a sole device); devices_mismatch otherwise", async () => {
    srv.addUser("nodevice");
    const solo = await srv.newDevice("solo");
    const c = await rawLogin(srv, alice);
    expect(await errOf(c, encodeFrame({ t: "msg", id: "e1", to: "nodevice", p: [] }))).toEqual({ e: "no_devices", id: "e1" });
    expect(await errOf(c, encodeFrame({ t: "msg", id: "e2", to: "bob", p: [] }))).toEqual({ e: "devices_mismatch", id: "e2" });
    const s = await rawLogin(srv, solo);
    expect(await errOf(s, encodeFrame({ t: "msg", id: "e3", to: "solo", p: [] }))).toEqual({ e: "no_devices", id: "e3" });
    c.end();
    s.end();
  });
});

/** A raw client from another source address (127.0.0.2): hello, then one frame; resolves with what the server sent until it closed. */
function fromOtherAddress(second: (hello: Extract<ServerStanza, { t: "hello" }>) => object): Promise<ServerStanza[]> {
  return new Promise((resolve, reject) => {
    const got: ServerStanza[] = [];
    const dec = new FrameDecoder(1 << 20);
    const sock: NetSocket = connect({ host: "127.0.0.1", port: srv.tcp, localAddress: "127.0.0.2" });
    sock.on("connect", () => sock.write(encodeFrame({ t: "hello", v: [1] })));
    sock.on("data", (chunk) =>
      dec.feed(new Uint8Array(chunk as Buffer), (body) => {
        const s = decodeBody(body) as ServerStanza;
        got.push(s);
        if (s.t === "hello") sock.write(encodeFrame(second(s)));
      }),
    );
    sock.on("close", () => resolve(got));
    sock.on("error", reject);
  });
}

describe("login failures by others never lock the owner out (§4.5)", () => {
  test("bad proofs for alice from another address get rate_limited there; alice's own device still logs in", async () => {
    const stranger = generateDeviceKey();
    const answers: string[] = [];
    for (let i = 0; i < 12; i++) {
      const got = await fromOtherAddress((h) => ({ t: "auth", u: "alice", d: alice.device, sig: proof(stranger, "auth", h.sid, h.nonce, "alice", alice.device) }));
      answers.push((got.find((s) => s.t === "err") as { e: string }).e);
    }
    expect(answers.slice(0, 10)).toEqual(Array(10).fill("auth_failed"));
    expect(answers.slice(10)).toEqual(["rate_limited", "rate_limited"]);
    const owner = await rawLogin(srv, alice); // from 127.0.0.1
    owner.end();
  });
});

describe("no account probing before login (§4.5)", () => {
  test("link answers linkcode for an existing and a missing account alike, and auth_failed for a bad proof to both", async () => {
    for (const u of ["alice", "no-such-account"]) {
      const c = await helloed();
      const key = generateDeviceKey();
      c.send({ t: "link", u, pk: key.publicKey, sig: proof(key, "link", c.serverHello!.sid, c.serverHello!.nonce, u, 0) });
      const lc = await c.expect("linkcode");
      expect(lc.code).toMatch(/^[A-Z0-9]{8}$/);
      c.end();
      const bad = await helloed();
      bad.send({ t: "link", u, pk: key.publicKey, sig: new Uint8Array(64) });
      expect((await bad.expect("err")).e).toBe("auth_failed");
      expect((await bad.expect("close")).r).toBe("auth_failed");
    }
  });
});

describe("read markers name something that was sent (§5.1 read)", () => {
  test("a marker in a conversation without messages, or beyond its last one, is ignored; one within it is passed on", async () => {
    const dave = await srv.newDevice("dave");
    const erin = await srv.newDevice("erin");
    const d = await rawLogin(srv, dave);
    const e = await rawLogin(srv, erin);
    d.send({ t: "read", u: "erin", seq: 5 });
    await barrier(d);
    d.send(msgFrame("r1", "erin", [erin.device]));
    const sent = await d.expect("sent");
    d.send({ t: "read", u: "erin", seq: sent.seq + 1 });
    await barrier(d);
    await barrier(e);
    expect(rcpts(e)).toEqual([]);
    expect(d.received.filter((s) => s.t === "err")).toEqual([]);
    d.send({ t: "read", u: "erin", seq: sent.seq });
    const r = await e.expect("rcpt");
    expect({ k: r.k, u: r.u, seq: r.seq }).toEqual({ k: "read", u: "dave", seq: sent.seq });
    d.end();
    e.end();
  });
});

describe("frame bounds (§2.2, §4.1)", () => {
  test(`before login a body may be at most ${LIMITS.preLoginFrame} bytes; after it, mf`, async () => {
    const c = await helloed();
    c.sendBytes(encodeFrame({ t: "ping", pad: "x".repeat(LIMITS.preLoginFrame) }));
    expect((await c.expect("err")).e).toBe("frame_too_large");
    expect((await c.expect("close")).r).toBe("frame_too_large");
    const ok = await helloed();
    ok.sendBytes(encodeFrame({ t: "ping", n: 1, pad: "x".repeat(LIMITS.preLoginFrame - 40) }));
    await ok.expect("pong");
    await ok.login(alice);
    ok.sendBytes(encodeFrame({ t: "ping", n: 2, pad: "x".repeat(4 * LIMITS.preLoginFrame) }));
    expect((await ok.expect("pong")).n).toBe(2);
    ok.end();
  });

  test("only complete frames count as activity: a frame trickled a byte at a time is reaped at the idle timeout", async () => {
    const quick = await startServer({ args: ["--timeouts-idle", "2", "--timeouts-ping-interval", "1"] });
    try {
      const kf = await quick.newDevice("slow");
      const c = await quick.raw();
      await c.login(kf);
      const header = new Uint8Array(4);
      new DataView(header.buffer).setUint32(0, 60_000);
      c.sendBytes(header);
      const drip = setInterval(() => c.closed || c.sendBytes(Uint8Array.of(0x00)), 200);
      try {
        const close = await c.expect("close", 20_000);
        expect(close.r).toBe("idle_timeout");
      } finally {
        clearInterval(drip);
      }
    } finally {
      quick.cleanup();
    }
  });
});

/**
 * Fuzz over real sockets: 100,000 random and mutated frames (seeded, so a
 * failure replays with SB_FUZZ_SEED) sent over 50 connections, some logged
 * in and some not, reconnecting whenever the server closes one, while two
 * SDK clients exchange messages the whole time.
 *
 * Afterwards: the server process is alive, /healthz answers, every message
 * the two clients exchanged arrived (in order, with receipts), neither was
 * disconnected, every frame the server sent was valid, the server never
 * reported an internal fault, and the protocol error counter moved.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { decodeBody, encodeBody } from "../../src/protocol/codec.ts";
import { FrameDecoder, frame } from "../../src/protocol/frame.ts";
import { validateServer, type HelloS, type ServerStanza } from "../../src/protocol/stanzas.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { collect, dec, proof } from "./util.ts";
import { prng } from "../helpers/prng.ts";

const CONNS = 50;
const FRAMES_PER_CONN = 2000;
const BATCH = 50;
const SEED = Number(process.env.SB_FUZZ_SEED ?? 20261122);
const MF = 65536;

let srv: TestServer;
beforeAll(async () => {
  // Failed logins are most of what the fuzzer does: keep the rate limits out of the way.
  srv = await startServer({ args: ["--auth-fail-per-ip", "100000000", "--auth-fail-per-account", "100000000"] });
});
afterAll(() => srv?.cleanup());


/** Everything odd the fuzzer saw from the server: each of these is a server bug. */
const anomalies: string[] = [];
const closeReasons = new Map<string, number>();
let readies = 0;
/** Accepted messages and deliveries seen by logged-in fuzz connections (so the fuzz reaches the handlers). */
let fuzzSent = 0;
let fuzzDelivered = 0;

/** A raw connection with real write buffering (Bun's write() does not buffer) and frame parsing. */
class FuzzConn {
  socket!: Socket<undefined>;
  closed = false;
  private decoder = new FrameDecoder(16 * 1024 * 1024);
  private pending: Uint8Array[] = [];
  private waiters: { match: (s: ServerStanza) => boolean; resolve: (s: ServerStanza | null) => void }[] = [];
  serverHello: HelloS | null = null;
  /** Queue ids delivered on this connection, for the fuzzer to acknowledge (or not). */
  qs: number[] = [];

  static async open(port: number, ca?: string): Promise<FuzzConn | null> {
    const c = new FuzzConn();
    let handshaken!: (ok: boolean) => void;
    const hs = new Promise<boolean>((r) => (handshaken = r));
    try {
      c.socket = await Bun.connect({
        hostname: "127.0.0.1",
        port,
        tls: ca ? { ca, serverName: "localhost" } : undefined,
        socket: {
          binaryType: "uint8array",
          data: (_s, chunk: Uint8Array) => c.feed(chunk),
          drain: () => c.flush(),
          handshake: (_s, ok) => handshaken(ok),
          close: () => c.onClose(),
          error: () => {},
        },
      });
    } catch (e) {
      anomalies.push(`connect failed: ${(e as Error).message}`);
      return null;
    }
    if (ca && !(await hs)) return null;
    return c;
  }

  private onClose(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.resolve(null);
  }

  private feed(chunk: Uint8Array): void {
    try {
      this.decoder.feed(chunk, (body) => {
        let v;
        try {
          v = validateServer(decodeBody(body));
        } catch (e) {
          anomalies.push(`undecodable server frame: ${(e as Error).message}`);
          return;
        }
        if (!v.ok) {
          anomalies.push(`invalid server frame: ${v.message}`);
          return;
        }
        const s = v.stanza;
        if (s.t === "close") {
          closeReasons.set(s.r, (closeReasons.get(s.r) ?? 0) + 1);
          if (s.m === "internal error") anomalies.push(`internal error close`);
        }
        if (s.t === "res" && s.e === "internal") anomalies.push(`internal error in iq: ${s.m}`);
        if (s.t === "ready") readies++;
        if (s.t === "sent") fuzzSent++;
        if (s.t === "msg") fuzzDelivered++;
        if ((s.t === "msg" || s.t === "rcpt" || s.t === "gap") && this.qs.length < 1000) this.qs.push(s.q);
        const i = this.waiters.findIndex((w) => w.match(s));
        if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(s);
      });
    } catch (e) {
      anomalies.push(`server framing broken: ${(e as Error).message}`);
      this.socket.terminate();
    }
  }

  write(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.pending.length) {
      this.pending.push(bytes);
      return;
    }
    const n = this.socket.write(bytes);
    if (n < 0) return;
    if (n < bytes.length) this.pending.push(bytes.subarray(n));
  }

  private flush(): void {
    while (this.pending.length && !this.closed) {
      const b = this.pending[0]!;
      const n = this.socket.write(b);
      if (n < 0) {
        this.pending.length = 0;
        return;
      }
      if (n < b.length) {
        this.pending[0] = b.subarray(n);
        return;
      }
      this.pending.shift();
    }
  }

  /** The next stanza matching, or null on close or after `ms`. */
  next(match: (s: ServerStanza) => boolean, ms: number): Promise<ServerStanza | null> {
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      const w = { match, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          resolve(null);
        }
      }, ms);
    });
  }

  end(): void {
    if (!this.closed) this.socket.end();
  }
}

// ---- frame generation ------------------------------------------------------

type Gen = { rand: () => number; int: (n: number) => number; pick: <T>(xs: readonly T[]) => T; bytes: (n: number) => Uint8Array };
function gen(seed: number): Gen {
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  return {
    rand,
    int,
    pick: (xs) => xs[int(xs.length)]!,
    bytes: (n) => {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = int(256);
      return b;
    },
  };
}

const FUZZ_ACCOUNTS = ["fz0", "fz1", "fz2", "fz3", "fz4"];
/** Devices per fuzz account: one per logged-in worker (25 of the 50). */
const DEVICES = [1, 2, 3, 4, 5];
const ACCOUNTS = ["alice", "bob", "fz0", "fz1", "fz2", "nobody", "Alice", "", "a".repeat(33)];
const OPS = ["devices", "presence", "link.approve", "device.revoke", "nope", ""];

/** A random msgpack-able value, nested up to `depth`. */
function randomValue(g: Gen, depth: number): unknown {
  switch (g.int(depth > 0 ? 11 : 8)) {
    case 0: return g.int(256);
    case 1: return g.pick([0, 1, -1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, -(2 ** 63), 1.5, NaN, Infinity]);
    case 2: return g.rand() * 1e6;
    case 3: return dec(g.bytes(g.int(12))).slice(0, 10);
    case 4: return g.pick(["t", "msg", "ping", "hello", "auth", "\u0000", "é", "x".repeat(300)]);
    case 5: return g.bytes(g.int(70));
    case 6: return g.pick([true, false, null]);
    case 7: return g.pick(ACCOUNTS);
    case 8: return Array.from({ length: g.int(5) }, () => randomValue(g, depth - 1));
    case 9: {
      const o: Record<string, unknown> = {};
      for (let i = g.int(5); i > 0; i--) o[g.pick(["t", "id", "u", "d", "q", "p", "s", "a", "op", "v", "n", "x", "seq", "to", "sig", "pk"])] = randomValue(g, depth - 1);
      return o;
    }
    default: return [[randomValue(g, depth - 1), randomValue(g, depth - 1)]];
  }
}

/** What a worker knows: its own device (when it logs in) and queue ids it was sent. */
interface Ctx {
  self: KeyFile | null;
  qs: number[];
}

/** A valid-looking stanza of every client kind; with a context, often a fully valid one. */
function template(g: Gen, ctx: Ctx): Record<string, unknown> {
  const acct = g.pick(ACCOUNTS.slice(0, 6));
  const kind = g.int(11);
  if (ctx.self && g.rand() < 0.5) {
    // Valid for this device: a msg with exactly the right device sets, an ack of ids it was sent, a read.
    const me = ctx.self;
    const to = g.pick(FUZZ_ACCOUNTS);
    if (kind < 5) {
      const p = DEVICES.map((d) => [d, g.bytes(g.int(30))]);
      const m: Record<string, unknown> = { t: "msg", id: `v${g.int(1e9)}`, to, p: to === me.account ? p.filter(([d]) => d !== me.device) : p };
      if (to !== me.account) m.s = DEVICES.filter((d) => d !== me.device).map((d) => [d, g.bytes(4)]);
      return m;
    }
    if (kind < 8 && ctx.qs.length) return { t: "ack", q: ctx.qs.splice(0, 1 + g.int(20)) };
    if (kind < 9) return { t: "read", u: to, seq: g.int(1e4) };
  }
  switch (kind) {
    case 0: return { t: "hello", v: [g.pick([1, 1, 2])], ua: "fuzz/1" };
    case 1: return { t: "auth", u: acct, d: 1 + g.int(3), sig: g.bytes(64) };
    case 2: return { t: "enroll", u: acct, code: "abcde-fghij", pk: g.bytes(32), sig: g.bytes(64), name: "fz" };
    case 3: return { t: "link", u: acct, pk: g.bytes(32), sig: g.bytes(64) };
    case 4: {
      const p = Array.from({ length: 1 + g.int(3) }, (_, i) => [1 + i, g.bytes(g.int(40))]);
      const m: Record<string, unknown> = { t: "msg", id: `z${g.int(1e6)}`, to: acct, p };
      if (g.rand() < 0.5) m.s = [[2, g.bytes(5)]];
      return m;
    }
    case 5: return { t: "ack", q: Array.from({ length: 1 + g.int(4) }, () => g.pick([g.int(1000), Date.now() * 1024 + g.int(1e6)])) };
    case 6: return { t: "read", u: acct, seq: g.int(1e6) };
    case 7: return { t: "pres", to: acct, s: g.pick(["typing", "paused"]) };
    case 8: {
      const op = g.pick(OPS);
      const a = op === "device.revoke" ? { d: 99 } : op === "link.approve" ? { code: "ABCDEFGH" } : { u: acct };
      return { t: "iq", id: g.int(2 ** 32), op, a };
    }
    case 9: return { t: "ping", n: g.int(2 ** 32) };
    default: return { t: "close", r: "client_quit" };
  }
}

/**
 * One fuzzed frame. Most keep the header honest (the stream stays framed);
 * `desync` ones break the framing on purpose.
 */
function fuzzFrame(g: Gen, mf: number, ctx: Ctx): { bytes: Uint8Array; desync: boolean } {
  const r = g.rand();
  const body = () => new Uint8Array(encodeBody(template(g, ctx)));
  if (r < 0.1) return { bytes: frame(body()), desync: false }; // valid
  if (r < 0.3) {
    // flip bytes
    const b = body();
    for (let i = 1 + g.int(8); i > 0; i--) {
      const at = g.int(b.length);
      b[at] = b[at]! ^ (1 << g.int(8));
    }
    return { bytes: frame(b), desync: false };
  }
  if (r < 0.4) {
    // truncate, header matching
    const b = body();
    return { bytes: frame(b.subarray(0, g.int(b.length))), desync: false };
  }
  if (r < 0.55) {
    // wrong types: replace, add or drop fields
    const t = template(g, ctx);
    const keys = Object.keys(t);
    const k = g.pick(keys);
    const op = g.int(3);
    if (op === 0) t[k] = randomValue(g, 2);
    else if (op === 1) t[g.pick(["zz", "id", "x", "a", "q"])] = randomValue(g, 2);
    else delete t[k];
    return { bytes: frame(new Uint8Array(encodeBody(t))), desync: false };
  }
  if (r < 0.7) return { bytes: frame(new Uint8Array(encodeBody({ v: randomValue(g, 3) }).subarray(1 + 2))), desync: false }; // a random msgpack value (not only maps)
  if (r < 0.8) return { bytes: frame(new Uint8Array(encodeBody(randomValue(g, 4) as object))), desync: false };
  if (r < 0.97) {
    // random body of a random length (mostly small, sometimes up to the limit)
    const n = g.rand() < 0.02 ? g.int(mf + 1) : g.int(200);
    return { bytes: frame(g.bytes(n)), desync: false };
  }
  if (r < 0.985) {
    // deep nesting
    const depth = 1 + g.int(5000);
    const b = new Uint8Array(depth * 2 + 1);
    for (let i = 0; i < depth; i++) b[i] = g.rand() < 0.5 ? 0x91 : 0x81;
    b.fill(0xc0, depth);
    return { bytes: frame(b.subarray(0, Math.min(b.length, mf))), desync: false };
  }
  const d = g.int(4);
  if (d === 0) return { bytes: g.bytes(1 + g.int(64)), desync: true }; // unframed garbage
  if (d === 1) {
    // header announcing more than follows
    const b = body();
    const f = frame(b);
    return { bytes: f.subarray(0, 4 + g.int(b.length)), desync: true };
  }
  if (d === 2) {
    // a length up to the limit with too few bytes
    const f = new Uint8Array(4 + 16);
    new DataView(f.buffer).setUint32(0, g.int(mf + 1));
    return { bytes: f, desync: true };
  }
  const f = new Uint8Array(4); // above the limit: fatal
  new DataView(f.buffer).setUint32(0, mf + 1 + g.int(2 ** 31));
  return { bytes: f, desync: true };
}

/** Zeros enough to complete any pending body (≤ mf) and then spend the error budget on empty frames. */
const RESYNC = new Uint8Array(MF + 4 * 200);

async function worker(idx: number, keys: KeyFile[], stats: { frames: number; conns: number; authed: number }): Promise<void> {
  const g = gen(SEED * 1000 + idx);
  const kf = idx % 2 === 0 ? keys[idx / 2]! : null;
  let sent = 0;
  while (sent < FRAMES_PER_CONN) {
    const tls = g.rand() < 0.2;
    const c = await FuzzConn.open(tls ? srv.tls : srv.tcp, tls ? srv.ca() : undefined);
    if (!c) continue;
    stats.conns++;
    let mf = MF;
    let self: KeyFile | null = null;
    if (g.rand() < 0.95) {
      c.write(frame(new Uint8Array(encodeBody({ t: "hello", v: [1] }))));
      const h = (await c.next((s) => s.t === "hello" || s.t === "close", 10_000)) as HelloS | null;
      if (h?.t === "hello") {
        mf = h.mf;
        if (kf && g.rand() < 0.9) {
          c.write(frame(new Uint8Array(encodeBody({ t: "auth", u: kf.account, d: kf.device, sig: proof(kf, "auth", h.sid, h.nonce, kf.account, kf.device) }))));
          const r = await c.next((s) => s.t === "ready" || s.t === "close", 10_000);
          if (r?.t === "ready") {
            stats.authed++;
            self = kf;
          }
        }
      }
    }
    let marker = 1;
    while (sent < FRAMES_PER_CONN && !c.closed) {
      const n = Math.min(BATCH, FRAMES_PER_CONN - sent);
      let desynced = false;
      for (let i = 0; i < n && !c.closed; i++) {
        const f = fuzzFrame(g, mf, { self, qs: c.qs });
        c.write(f.bytes);
        sent++;
        stats.frames++;
        if (f.desync) {
          desynced = true;
          break;
        }
      }
      if (desynced) {
        if (g.rand() < 0.3) break; // end the connection mid-frame
        c.write(RESYNC); // forces a close: the pending body fills, then empty frames spend the budget
      }
      const n0 = marker++;
      c.write(frame(new Uint8Array(encodeBody({ t: "ping", n: n0 }))));
      const pong = await c.next((s) => (s.t === "pong" && s.n === n0) || s.t === "close", 3000);
      if (pong === null || pong.t === "close") break;
    }
    c.end();
  }
}

test("100,000 fuzzed frames on 50 connections; two SDK clients talk throughout, unharmed", async () => {
  const errors0 = await srv.metric("switchboard_protocol_errors_total");
  // Fuzz accounts with real devices, so that some fuzz connections are logged in.
  const keys: KeyFile[] = [];
  for (const a of FUZZ_ACCOUNTS) for (const _ of DEVICES) keys.push(await srv.newDevice(a));

  const alice = await srv.client(await srv.newDevice("alice"), { tlsTransport: true });
  const bob = await srv.client(await srv.newDevice("bob"));
  const [ca, cb] = [collect(alice), collect(bob)];
  const sentBy: Record<string, { id: string; seq: number }[]> = { alice: [], bob: [] };
  let stop = false;
  const talk = async (me: typeof alice, name: string, peer: string) => {
    for (let i = 0; !stop; i++) {
      const s = await me.send(peer, `${name} ${i}`);
      sentBy[name]!.push({ id: s.id, seq: s.seq });
      await Bun.sleep(5);
    }
  };
  const talking = Promise.all([talk(alice, "alice", "bob"), talk(bob, "bob", "alice")]);

  const stats = { frames: 0, conns: 0, authed: 0 };
  await Promise.all(Array.from({ length: CONNS }, (_, i) => worker(i, keys, stats)));
  stop = true;
  await talking;

  // The server is alive and well.
  expect(srv.proc.exitCode).toBeNull();
  expect(await srv.http_get("/healthz")).toEqual({ status: 200, text: "ok\n" });
  expect(anomalies).toEqual([]);
  expect(stats.frames).toBe(CONNS * FRAMES_PER_CONN);
  expect(stats.authed).toBeGreaterThan(0);
  expect(fuzzSent).toBeGreaterThan(0);
  expect(fuzzDelivered).toBeGreaterThan(0);
  expect(await srv.metric("switchboard_protocol_errors_total")).toBeGreaterThan(errors0 + 10_000);

  // Every message the two clients exchanged arrived, once, in order; and was receipted.
  const from = (c: typeof ca, who: string) => c.messages.filter((m) => m.from === who);
  await waitFor(() => from(cb, "alice").length === sentBy.alice!.length && from(ca, "bob").length === sentBy.bob!.length, "all exchanged messages", 30_000);
  expect(from(cb, "alice").map((m) => m.id)).toEqual(sentBy.alice!.map((s) => s.id));
  expect(from(ca, "bob").map((m) => m.id)).toEqual(sentBy.bob!.map((s) => s.id));
  expect(from(cb, "alice").map((m) => dec(m.payload))).toEqual(sentBy.alice!.map((_, i) => `alice ${i}`));
  expect(sentBy.alice!.length).toBeGreaterThan(10);
  expect(sentBy.bob!.length).toBeGreaterThan(10);
  await waitFor(
    () => ca.receipts.filter((r) => r.kind === "dlv" && r.account === "bob").length >= sentBy.alice!.length,
    "dlv receipts for alice's messages",
    30_000,
  );
  expect(ca.closes).toEqual([]);
  expect(cb.closes).toEqual([]);
  expect(ca.errors).toEqual([]);
  expect(cb.errors).toEqual([]);
  console.log(`fuzz seed ${SEED}: ${stats.frames} frames, ${stats.conns} connections (${stats.authed} logged in), ${readies} ready, ${fuzzSent} fuzz msgs accepted, ${fuzzDelivered} delivered to fuzz connections, closes ${JSON.stringify(Object.fromEntries(closeReasons))}, exchanged ${sentBy.alice!.length}+${sentBy.bob!.length}`);
  await alice.close();
  await bob.close();
}, 170_000);

/**
 * Micro-benchmarks of the building blocks the server runs per 1:1 message
 * (`bun loadtest/microbench.ts`), to put numbers next to the CPU profile in
 * BENCHMARKS.md. Each line is ns per operation, median of 5 rounds. Not part
 * of the load generator proper.
 */
import * as hdr from "hdr-histogram-js";
import { decodeBody, encodeBody } from "../src/protocol/codec.ts";
import { validateClient, validateServer } from "../src/protocol/stanzas.ts";
import { scanFrame, Scanned } from "./lean.ts";
import { frame } from "../src/protocol/frame.ts";

function bench(name: string, n: number, fn: (i: number) => void): number {
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn(i);
    rounds.push(((performance.now() - t0) * 1e6) / n);
  }
  rounds.sort((a, b) => a - b);
  const med = rounds[2]!;
  console.log(`${name.padEnd(64)} ${med.toFixed(0).padStart(7)} ns/op`);
  return med;
}

const p = new Uint8Array(64).fill(7);
const ts = Date.now();
let sink = 0;

console.log(`bun ${Bun.version}; ns per operation, median of 5 rounds\n`);
console.log("-- codec (src/protocol/codec.ts = msgpackr) and validator --");
bench("encodeBody(msg delivery, 64 B payload)", 300_000, (i) => {
  sink += encodeBody({ t: "msg", q: ts * 1024 + i, id: "12345", from: "lt1234abcd-a17", fd: 1, to: "lt1234abcd-b17", seq: i, ts, p }).length;
});
bench("encodeBody(rcpt dlv)", 300_000, (i) => {
  sink += encodeBody({ t: "rcpt", q: ts * 1024 + i, k: "dlv", u: "lt1234abcd-b17", d: 1, w: "lt1234abcd-b17", seq: i, id: "12345", ts }).length;
});
bench("encodeBody(sent)", 300_000, (i) => {
  sink += encodeBody({ t: "sent", id: "12345", to: "lt1234abcd-b17", seq: i, ts }).length;
});
const msgIn = encodeBody({ t: "msg", id: "12345", to: "lt1234abcd-b17", p: [[1, p]] }).slice();
bench("decodeBody + validateClient(msg, 64 B payload)", 300_000, () => {
  const v = validateClient(decodeBody(msgIn));
  sink += v.ok ? 1 : 0;
});
const ackIn = encodeBody({ t: "ack", q: [ts * 1024, ts * 1024 + 1, ts * 1024 + 2, ts * 1024 + 3] }).slice();
bench("decodeBody + validateClient(ack of 4 ids)", 300_000, () => {
  const v = validateClient(decodeBody(ackIn));
  sink += v.ok ? 1 : 0;
});
bench("frame(body) (header + copy)", 300_000, () => {
  sink += frame(msgIn).length;
});

// What a hand-written encoder for the hottest frame costs: the same bytes as encodeBody (checked below).
const te = new TextEncoder();
const out = new Uint8Array(64 * 1024);
const f64 = new Float64Array(1);
const f64b = new Uint8Array(f64.buffer);
function putStr(o: number, s: string): number {
  out[o++] = 0xa0 | s.length; // fixstr; ASCII account names and ids < 32 bytes
  for (let i = 0; i < s.length; i++) out[o++] = s.charCodeAt(i);
  return o;
}
function putKey(o: number, k: string): number {
  return putStr(o, k);
}
function putNum(o: number, v: number): number {
  if (v < 128) out[o++] = v;
  else if (v < 256) {
    out[o++] = 0xcc;
    out[o++] = v;
  } else if (v < 65536) {
    out[o++] = 0xcd;
    out[o++] = v >>> 8; out[o++] = v & 0xff;
  } else if (v < 4294967296) {
    out[o++] = 0xce;
    out[o++] = v >>> 24; out[o++] = (v >>> 16) & 0xff; out[o++] = (v >>> 8) & 0xff; out[o++] = v & 0xff;
  } else {
    out[o++] = 0xcb;
    f64[0] = v;
    for (let j = 0; j < 8; j++) out[o + j] = f64b[7 - j]!;
    o += 8;
  }
  return o;
}
function handMsg(q: number, id: string, from: string, fd: number, to: string, seq: number, t: number, pay: Uint8Array): number {
  let o = 0;
  out[o++] = 0x89;
  o = putKey(o, "t"); o = putStr(o, "msg");
  o = putKey(o, "q"); o = putNum(o, q);
  o = putKey(o, "id"); o = putStr(o, id);
  o = putKey(o, "from"); o = putStr(o, from);
  o = putKey(o, "fd"); o = putNum(o, fd);
  o = putKey(o, "to"); o = putStr(o, to);
  o = putKey(o, "seq"); o = putNum(o, seq);
  o = putKey(o, "ts"); o = putNum(o, t);
  o = putKey(o, "p"); out[o++] = 0xc4; out[o++] = pay.length; out.set(pay, o);
  return o + pay.length;
}
{
  const a = handMsg(ts * 1024 + 5, "12345", "lt1234abcd-a17", 1, "lt1234abcd-b17", 300, ts, p);
  const b = encodeBody({ t: "msg", q: ts * 1024 + 5, id: "12345", from: "lt1234abcd-a17", fd: 1, to: "lt1234abcd-b17", seq: 300, ts, p });
  if (Buffer.compare(Buffer.from(out.subarray(0, a)), Buffer.from(b)) !== 0) throw new Error("hand encoder differs from encodeBody");
}
bench("hand-written encoder, msg delivery (same bytes), into a buffer", 1_000_000, (i) => {
  sink += handMsg(ts * 1024 + i, "12345", "lt1234abcd-a17", 1, "lt1234abcd-b17", i, ts, p);
});
void te;

console.log("\n-- client side: reading a delivered msg (what the load generator does per message) --");
const deliver = encodeBody({ t: "msg", q: ts * 1024 + 5, id: "12345", from: "lt1234abcd-a17", fd: 1, to: "lt1234abcd-b17", seq: 300, ts, p }).slice();
bench("SDK path: decodeBody + validateServer(msg delivery)", 300_000, () => {
  const v = validateServer(decodeBody(deliver));
  sink += v.ok ? 1 : 0;
});
const sc = new Scanned();
bench("lean client: scanFrame(msg delivery)", 1_000_000, () => {
  scanFrame(deliver, 0, deliver.length, sc);
  sink += sc.q;
});

// src/modules/messaging/index.ts: DEDUP_MAX (100 000 at 5c3c98e; it was 500 000 before).
const N = Number(process.env.DEDUP_MAX ?? 100_000);
console.log(`\n-- messaging dedup map, ${N} entries --`);
const m = new Map<string, object>();
for (let i = 0; i < N; i++) m.set(`acct${i % 1000}\u00001\u0000${i}`, { i });
bench("full Map: delete(keys().next().value) + set  (current code)", 20_000, (i) => {
  m.delete(m.keys().next().value!);
  m.set(`acct${i % 1000}\u00001\u0000${N + i}`, { i });
});
const g1 = new Map<string, object>();
for (let i = 0; i < N / 2; i++) g1.set(`acct${i % 1000}\u00001\u0000${i}`, { i });
let cur = new Map<string, object>();
bench(`two generations (swap at ${N / 2}): get + get + set`, 300_000, (i) => {
  const k = `acct${i % 1000}\u00001\u0000${N + i}`;
  sink += cur.get(k) === undefined && g1.get(k) === undefined ? 1 : 0;
  if (cur.size >= N / 2) cur = new Map();
  cur.set(k, { i });
});

console.log("\n-- latency histogram (src/core/metrics.ts) --");
const packed = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3, bitBucketSize: "packed" });
const int32 = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3, bitBucketSize: 32 });
bench("hdr recordValue, bitBucketSize packed (current)", 1_000_000, (i) => packed.recordValue(1000 + (i % 50_000)));
bench("hdr recordValue, bitBucketSize 32", 1_000_000, (i) => int32.recordValue(1000 + (i % 50_000)));

console.log("\n-- one login (src/core/session.ts auth, src/core/directory.ts key) --");
{
  const { createHmac, generateKeyPairSync, randomBytes, sign, verify } = await import("node:crypto");
  const { proofTranscript } = await import("../src/protocol/auth.ts");
  const { ed25519PublicKey } = await import("../src/core/directory.ts");
  const { provision } = await import("./setup.ts");
  const { SqliteAccountStore } = await import("../src/store/accounts.ts");
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = (publicKey.export({ format: "der", type: "spki" }) as Buffer).subarray(12);
  const nonce = randomBytes(32);
  const msg = proofTranscript("auth", "sb-0123456789abcdef", nonce, "lt1234abcd-17", 1);
  const sig = sign(null, msg, privateKey);
  bench("Ed25519 sign (node:crypto; the client's side)", 5_000, () => {
    sink += sign(null, msg, privateKey).length;
  });
  bench("Ed25519 verify (node:crypto, KeyObject at hand)", 5_000, () => {
    sink += verify(null, msg, publicKey, sig) ? 1 : 0;
  });
  bench("ed25519PublicKey(raw 32 B) -> KeyObject (per login: not cached)", 50_000, () => {
    sink += ed25519PublicKey(raw).asymmetricKeyType!.length;
  });
  bench("proofTranscript(auth, ...)", 300_000, (i) => {
    sink += proofTranscript("auth", "sb-0123456789abcdef", nonce, "lt1234abcd-17", 1 + (i & 7)).length;
  });
  bench("randomBytes(32) (the hello nonce)", 300_000, () => {
    sink += randomBytes(32).length;
  });
  const dir = mkdtempSync(join(tmpdir(), "sb-micro-"));
  const names = Array.from({ length: 10_000 }, (_, i) => `lt1234abcd-${i}`);
  provision(dir, names);
  const store = new SqliteAccountStore(dir);
  bench("SqliteAccountStore.device(account, 1) of 10 000 (the device row per login)", 100_000, (i) => {
    sink += store.device(names[i % names.length]!, 1)!.pk.length;
  });
  // src/core/context.ts: a module calls core's services through its ModuleContext's views, one arrow more.
  const { Directory } = await import("../src/core/directory.ts");
  const directory = new Directory(store, 5);
  const view = { deviceIds: (account: string) => directory.deviceIds(account) };
  for (const n of names) directory.deviceIds(n); // cached, as on a running server
  bench("Directory.deviceIds(account), cached (a module's per-message look-up)", 3_000_000, (i) => {
    sink += directory.deviceIds(names[i % 1000]!)!.length;
  });
  bench("the same through a ModuleContext view (an arrow over it)", 3_000_000, (i) => {
    sink += view.deviceIds(names[i % 1000]!)!.length;
  });
  store.close();
  rmSync(dir, { recursive: true, force: true });
  // What a resumption ticket (a server-keyed MAC over account, device, expiry) would cost instead of a signature check.
  const hk = randomBytes(32);
  const ticket = Buffer.concat([Buffer.from("lt1234abcd-17"), Buffer.alloc(12)]);
  bench("HMAC-SHA256 over a 25-byte ticket (node:crypto createHmac)", 300_000, () => {
    sink += createHmac("sha256", hk).update(ticket).update(nonce).digest().length;
  });
  const hasher = new Bun.CryptoHasher("sha256", hk);
  bench("HMAC-SHA256 over a 25-byte ticket (Bun.CryptoHasher, reused key)", 300_000, () => {
    const h = hasher.copy();
    h.update(ticket);
    h.update(nonce);
    sink += h.digest().length;
  });
}

if (sink === -1) console.log(sink);

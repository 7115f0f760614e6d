/**
 * The test vectors of docs/PROTOCOL.md §10.
 *
 *   bun tools/protocol-vectors.ts           prints the vector blocks
 *   bun tools/protocol-vectors.ts --write   rewrites them in docs/PROTOCOL.md
 *                                           (between its BEGIN/END VECTORS markers)
 *
 * test/protocol/vectors.test.ts reads the spec back and checks every block
 * against these values and against the codec, so the two cannot drift apart.
 */
import { createHmac, createPrivateKey, createPublicKey, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { proofTranscript, resumeTranscript, type ProofPurpose } from "../src/protocol/auth.ts";
import { encodeFrame } from "../src/protocol/codec.ts";

export interface FrameVector {
  name: string;
  /** One sentence for the spec, printed above the block. */
  about: string;
  /** c2s: a client sends it (checked with validateClient); s2c: the server does. */
  dir: "c2s" | "s2c";
  value: Record<string, unknown>;
}

export interface TranscriptVector {
  name: string;
  purpose: ProofPurpose;
  sid: string;
  nonce: Uint8Array;
  account: string;
  device: number;
}

const bytes = (n: number, f: (i: number) => number) => Uint8Array.from({ length: n }, (_, i) => f(i));
export const NONCE = bytes(32, (i) => i); // 00 01 .. 1f
export const SIG_AA = bytes(64, () => 0xaa);
export const SEED = bytes(32, () => 0x01);
/** A resumption ticket and its secret as a server might hand them out (§4.11): key id 1, expiry 1 800 000 000 s. */
export const TICKET = Uint8Array.from([0, 0, 0, 1, 0x6b, 0x49, 0xd2, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]);
export const TICKET_SECRET = bytes(32, () => 0x02);
export const RESUME_TS = 1700000000000;
/** 2^32 + 7: above 32 bits, so msgpackr writes it as a float64. */
export const BIG_Q = 2 ** 32 + 7;

export const FRAME_VECTORS: FrameVector[] = [
  { name: "client-hello", about: "The client's first frame: it speaks version 1.", dir: "c2s", value: { t: "hello", v: [1], ua: "sbtest/1.0" } },
  {
    name: "server-hello",
    about: "The server's answer, with the fixed nonce 00 01 .. 1f (a real server draws 32 random bytes per connection).",
    dir: "s2c",
    value: { t: "hello", v: 1, sid: "sb-test", nonce: NONCE, mf: 65536, pi: 30, it: 90 },
  },
  { name: "auth", about: "Login of alice's device 1, with a placeholder signature of 64 bytes 0xaa (a real one signs the transcript, §10.2).", dir: "c2s", value: { t: "auth", u: "alice", d: 1, sig: SIG_AA } },
  { name: "ready", about: "Login accepted; `ts` (above 2^32) is written as a float64.", dir: "s2c", value: { t: "ready", u: "alice", d: 1, ts: 1700000000000 } },
  {
    name: "resume",
    about: "A later login of the same device with the ticket of `resume-mac` (§10.2), in the same write as its hello (§4.11).",
    dir: "c2s",
    value: { t: "resume", u: "alice", d: 1, tk: TICKET, ts: RESUME_TS, mac: resumeMac() },
  },
  {
    name: "msg-send",
    about: "alice's device 1 sends to bob, who has devices 1 and 2, with a sync copy for alice's device 2.",
    dir: "c2s",
    value: {
      t: "msg",
      id: "m1",
      to: "bob",
      p: [
        [1, Uint8Array.of(1, 2, 3, 4)],
        [2, Uint8Array.of(5, 6, 7, 8)],
      ],
      s: [[2, Uint8Array.of(9, 10, 11, 12)]],
    },
  },
  { name: "sent", about: "The message is durable: seq 42.", dir: "s2c", value: { t: "sent", id: "m1", to: "bob", seq: 42, ts: 1700000000123 } },
  {
    name: "msg-deliver",
    about: "The copy for bob's device 1, with a queue id above 2^32 written as a float64.",
    dir: "s2c",
    value: {
      t: "msg", q: BIG_Q, id: "m1", from: "alice", fd: 1, to: "bob", seq: 42, ts: 1700000000123, p: Uint8Array.of(1, 2, 3, 4),
    },
  },
  { name: "ack", about: "bob's device 1 acknowledges two queue items; the second id is above 2^32.", dir: "c2s", value: { t: "ack", q: [7, BIG_Q] } },
  {
    name: "rcpt-dlv",
    about: "Each of alice's devices learns that bob's device 1 got message m1.",
    dir: "s2c",
    value: { t: "rcpt", q: 12, k: "dlv", u: "bob", d: 1, w: "bob", seq: 42, id: "m1", ts: 1700000000200 },
  },
  { name: "read", about: "bob has read his conversation with alice up to seq 42.", dir: "c2s", value: { t: "read", u: "alice", seq: 42 } },
  { name: "pres", about: "alice is typing to bob.", dir: "c2s", value: { t: "pres", to: "bob", s: "typing" } },
  { name: "iq", about: "Request: bob's current devices.", dir: "c2s", value: { t: "iq", id: 7, op: "devices", a: { u: "bob" } } },
  {
    name: "res",
    about: "Answer: another account's devices come without names; `kv` is each device's key version (0: no end-to-end keys yet).",
    dir: "s2c",
    value: {
      t: "res",
      id: 7,
      ok: true,
      r: { u: "bob", devices: [{ d: 1, created: 1690000000000, kv: 0 }, { d: 2, created: 1695000000000, kv: 3 }] },
    },
  },
  { name: "res-error", about: "A failed answer.", dir: "s2c", value: { t: "res", id: 8, ok: false, e: "unknown_op", m: "unknown op" } },
  {
    name: "err",
    about: "The message was refused: bob has a device 3 that alice did not address.",
    dir: "s2c",
    value: { t: "err", e: "devices_mismatch", m: "device lists changed", id: "m1", x: { missing: { bob: [3] }, extra: {} } },
  },
  { name: "ping", about: "Heartbeat.", dir: "c2s", value: { t: "ping", n: 1 } },
  { name: "pong", about: "Heartbeat answer.", dir: "s2c", value: { t: "pong", n: 1 } },
  { name: "close", about: "The server is restarting: come back in 5 s.", dir: "s2c", value: { t: "close", r: "server_shutdown", m: "restarting", ra: 5000 } },
];

export const TRANSCRIPT_VECTORS: TranscriptVector[] = [
  { name: "auth-transcript", purpose: "auth", sid: "sb-test", nonce: NONCE, account: "alice", device: 1 },
  { name: "enroll-transcript", purpose: "enroll", sid: "sb-test", nonce: NONCE, account: "alice", device: 0 },
];

/** HMAC-SHA256 under TICKET_SECRET of alice's device 1 resume transcript at RESUME_TS, server id sb-test. */
export function resumeMac(): Uint8Array {
  return Uint8Array.from(createHmac("sha256", TICKET_SECRET).update(resumeTranscript("sb-test", "alice", 1, RESUME_TS)).digest());
}

/** DER prefixes that wrap a raw Ed25519 key for node:crypto (RFC 8410). */
export const PKCS8_ED25519_PREFIX = Uint8Array.from(Buffer.from("302e020100300506032b657004220420", "hex"));
export const SPKI_ED25519_PREFIX = Uint8Array.from(Buffer.from("302a300506032b6570032100", "hex"));

/** Ed25519 key pair from a 32-byte seed: the signing key object and the raw 32-byte public key. */
export function ed25519FromSeed(seed: Uint8Array) {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(key).export({ format: "der", type: "spki" });
  return { key, publicKey: Uint8Array.from(spki.subarray(SPKI_ED25519_PREFIX.length)) };
}

export function ed25519Sign(seed: Uint8Array, data: Uint8Array): Uint8Array {
  return Uint8Array.from(sign(null, data, ed25519FromSeed(seed).key));
}

// ---- rendering ---------------------------------------------------------------

export const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** Hex in lines of 16 space-separated bytes. */
export function hexLines(b: Uint8Array): string[] {
  const out: string[] = [];
  for (let i = 0; i < b.length; i += 16) out.push([...b.subarray(i, i + 16)].map((x) => x.toString(16).padStart(2, "0")).join(" "));
  return out;
}

/** JSON-like, one line; msgpack bin is written h'hex'. */
export function renderValue(v: unknown): string {
  if (v instanceof Uint8Array) return `h'${toHex(v)}'`;
  if (Array.isArray(v)) return `[${v.map(renderValue).join(", ")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${renderValue(x)}`).join(", ")}}`;
  }
  return JSON.stringify(v);
}

const block = (name: string, lines: string[]) => ["```vector " + name, ...lines, "```"].join("\n");
const hexField = (label: string, b: Uint8Array) => [`${label}:`, ...hexLines(b)];

export function frameVectorBlock(v: FrameVector): string {
  return block(v.name, [`dir: ${v.dir}`, `value: ${renderValue(v.value)}`, ...hexField("frame", encodeFrame(v.value))]);
}

export function transcriptVectorBlock(v: TranscriptVector): string {
  return block(v.name, [
    `purpose: ${v.purpose}`,
    `sid: ${v.sid}`,
    `nonce: ${toHex(v.nonce)}`,
    `account: ${v.account}`,
    `device: ${v.device}`,
    ...hexField("transcript", proofTranscript(v.purpose, v.sid, v.nonce, v.account, v.device)),
  ]);
}

export function signatureVectorBlock(): string {
  const t = TRANSCRIPT_VECTORS[0]!;
  const transcript = proofTranscript(t.purpose, t.sid, t.nonce, t.account, t.device);
  return block("ed25519-signature", [
    `seed: ${toHex(SEED)}`,
    `public-key: ${toHex(ed25519FromSeed(SEED).publicKey)}`,
    ...hexField("transcript", transcript),
    ...hexField("signature", ed25519Sign(SEED, transcript)),
  ]);
}

export function resumeVectorBlock(): string {
  return block("resume-mac", [
    "sid: sb-test",
    "account: alice",
    "device: 1",
    `ts: ${RESUME_TS}`,
    `ticket: ${toHex(TICKET)}`,
    `secret: ${toHex(TICKET_SECRET)}`,
    ...hexField("transcript", resumeTranscript("sb-test", "alice", 1, RESUME_TS)),
    ...hexField("mac", resumeMac()),
  ]);
}

/** The generated sections of the spec, by marker name. */
export function sections(): Record<string, string> {
  return {
    FRAMES: FRAME_VECTORS.map((v) => `#### ${v.name}\n\n${v.about}\n\n${frameVectorBlock(v)}`).join("\n\n"),
    TRANSCRIPTS: TRANSCRIPT_VECTORS.map(transcriptVectorBlock).join("\n\n"),
    SIGNATURE: signatureVectorBlock(),
    RESUME: resumeVectorBlock(),
  };
}

/** Replaces the text between `<!-- BEGIN VECTORS:X -->` and `<!-- END VECTORS:X -->` for every section. */
export function fillSpec(md: string): string {
  for (const [name, text] of Object.entries(sections())) {
    const re = new RegExp(`(<!-- BEGIN VECTORS:${name} -->)[\\s\\S]*?(<!-- END VECTORS:${name} -->)`);
    if (!re.test(md)) throw new Error(`spec has no BEGIN/END VECTORS:${name} markers`);
    md = md.replace(re, (_, a: string, b: string) => `${a}\n${text}\n${b}`);
  }
  return md;
}

if (import.meta.main) {
  if (process.argv.includes("--write")) {
    const path = join(import.meta.dir, "../docs/PROTOCOL.md");
    writeFileSync(path, fillSpec(readFileSync(path, "utf8")));
    console.log(`updated ${path}`);
  } else {
    console.log(Object.values(sections()).join("\n\n"));
  }
}

/**
 * What the two HMAC-SHA256 of a ticket resume (Tickets.check: derive the ticket's secret under the shard key, then
 * the proof under that secret) cost per call on Bun, by way of computing them. One thread, no I/O; each variant
 * computes the same 32 bytes (checked against node:crypto before timing).
 *
 * Variants: `createHmac` (node:crypto); `CryptoHasher` (a new keyed Bun.CryptoHasher per HMAC, several update()s,
 * digest() to a fresh Buffer: Tickets before this bench); `kept+copy` (the shard key's hasher kept, copy() per call,
 * digest into a kept 64-byte array); `sha256 pads` (HMAC written out over Bun.SHA256.hash: the key's ipad/opad
 * blocks kept, the message written after them in a kept buffer, both hashes into kept arrays: no object per call).
 * Also the transcript building alone: concatenated parts (auth.ts joined) against written in place.
 *
 * Usage: taskset -c 1 node_modules/.bin/bun loadtest/hmac-bench.ts [calls=200000]
 * Prints one line per variant (ns per resume's pair of HMACs, median of 5 rounds) and one JSON line.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { resumeTranscript, ticketSecretInput } from "../src/protocol/auth.ts";
import { HmacSha256 } from "../src/core/hmac.ts";
import { writeResumeTranscript, writeTicketSecretInput } from "../src/protocol/auth.ts";

const calls = Number(process.argv[2] ?? 200_000);
const sid = "node-1.switchboard.example";
const shardKey = crypto.getRandomValues(new Uint8Array(32));
const accounts = Array.from({ length: 1000 }, (_, i) => `user${i}`);
const tk = crypto.getRandomValues(new Uint8Array(16));
const ts = Date.now();

function viaNode(account: string, device: number): Uint8Array {
  const t = createHmac("sha256", shardKey).update(ticketSecretInput(sid, account, device, tk)).digest();
  return createHmac("sha256", t).update(resumeTranscript(sid, account, device, ts)).digest();
}
function hmacBun(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = new Bun.CryptoHasher("sha256", key);
  for (const p of parts) h.update(p);
  const b = h.digest();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}
function viaHasher(account: string, device: number): Uint8Array {
  const t = hmacBun(shardKey, ticketSecretInput(sid, account, device, tk));
  return hmacBun(t, resumeTranscript(sid, account, device, ts));
}
const kept = new Bun.CryptoHasher("sha256", shardKey);
const out64 = new Uint8Array(64);
const scratch = new Uint8Array(256);
function viaCopy(account: string, device: number): Uint8Array {
  const h = kept.copy();
  h.update(scratch.subarray(0, writeTicketSecretInput(scratch, 0, sid, account, device, tk)));
  h.digest(out64);
  const p = new Bun.CryptoHasher("sha256", out64.subarray(0, 32));
  p.update(scratch.subarray(0, writeResumeTranscript(scratch, 0, sid, account, device, ts)));
  p.digest(out64);
  return out64.subarray(0, 32);
}
const shardMac = new HmacSha256();
const proofMac = new HmacSha256();
shardMac.key(shardKey);
const secret = new Uint8Array(32);
function viaPads(account: string, device: number): Uint8Array {
  let n = writeTicketSecretInput(shardMac.message, 0, sid, account, device, tk);
  secret.set(shardMac.mac(n));
  proofMac.key(secret);
  n = writeResumeTranscript(proofMac.message, 0, sid, account, device, ts);
  return proofMac.mac(n);
}
function transcriptsJoined(account: string, device: number): number {
  return ticketSecretInput(sid, account, device, tk).length + resumeTranscript(sid, account, device, ts).length;
}
function transcriptsInPlace(account: string, device: number): number {
  return writeTicketSecretInput(scratch, 0, sid, account, device, tk) + writeResumeTranscript(scratch, 0, sid, account, device, ts);
}

const variants: [string, (a: string, d: number) => unknown][] = [
  ["createHmac (node:crypto)", viaNode],
  ["CryptoHasher per HMAC (before)", viaHasher],
  ["kept hasher + copy(), digest into kept", viaCopy],
  ["sha256 pads, written in place (after)", viaPads],
  ["transcripts only: joined parts", transcriptsJoined],
  ["transcripts only: written in place", transcriptsInPlace],
];
for (const [name, f] of variants.slice(1, 4)) {
  for (const a of accounts.slice(0, 50)) {
    const want = viaNode(a, 3);
    if (!timingSafeEqual(want, f(a, 3) as Uint8Array)) throw new Error(`${name}: not the same bytes as createHmac for ${a}`);
  }
}
const results: Record<string, number> = {};
for (const [name, f] of variants) {
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    for (let i = 0; i < calls; i++) f(accounts[i % accounts.length]!, (i & 7) + 1);
    rounds.push(((performance.now() - t) * 1e6) / calls);
  }
  rounds.sort((x, y) => x - y);
  results[name] = Math.round(rounds[2]!);
  console.log(`${name.padEnd(44)} ${String(Math.round(rounds[2]!)).padStart(6)} ns per resume (rounds ${rounds.map((x) => Math.round(x)).join(", ")})`);
}
console.log(JSON.stringify({ bench: "hmac", calls, ns_per_resume: results }));

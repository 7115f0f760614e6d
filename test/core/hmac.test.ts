/**
 * HmacSha256 (src/core/hmac.ts) and the transcripts written in place (src/protocol/auth.ts): the same bytes as
 * node:crypto's createHmac and as the allocating transcript builders, for random keys, lengths and messages,
 * with the kept buffers reused from call to call (what Tickets does). The seed is printed on a failure.
 */
import { describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { HmacSha256 } from "../../src/core/hmac.ts";
import { resumeTranscript, ticketSecretInput, transcriptBound, writeResumeTranscript, writeTicketSecretInput } from "../../src/protocol/auth.ts";

const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const seed = Number(process.env.SEED ?? Math.floor(Math.random() * 2 ** 31));
let state = seed;
const rnd = (n: number) => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) % n);
const bytes = (n: number) => Uint8Array.from({ length: n }, () => rnd(256));

describe("HmacSha256", () => {
  test(`the same MAC as createHmac, keys of 0..64 bytes, messages of 0..600 bytes (seed ${seed})`, () => {
    const h = new HmacSha256();
    for (let i = 0; i < 400; i++) {
      const key = bytes(rnd(65));
      const msg = bytes(i < 20 ? i * 30 : rnd(300));
      h.key(key);
      h.room(msg.length).set(msg);
      const got = toHex(h.mac(msg.length));
      if (got !== createHmac("sha256", key).update(msg).digest("hex")) throw new Error(`differs from createHmac (seed ${seed}, case ${i}, key ${key.length} B, message ${msg.length} B)`);
    }
  });

  test("a key longer than a block and a message beyond the room are refused with the fix", () => {
    const h = new HmacSha256();
    expect(() => h.key(new Uint8Array(65))).toThrow(/at most 64 bytes/);
    expect(() => h.mac(h.message.length + 1)).toThrow(/call room/);
  });
});

describe("transcripts written in place", () => {
  test(`the bytes of resumeTranscript and ticketSecretInput, ASCII and not, at an offset in a reused buffer (seed ${seed})`, () => {
    const names = ["ann", "a", "user.name-99", "x".repeat(32), "ünïcødé", "日本"];
    const buf = new Uint8Array(400).fill(0xee);
    for (let i = 0; i < 200; i++) {
      const sid = i % 2 ? "node-1.example" : "sid-ä";
      const account = names[rnd(names.length)]!;
      const device = rnd(2 ** 31);
      const ts = Date.now() + rnd(1e9);
      const tk = bytes(16);
      const at = rnd(40);
      let end = writeResumeTranscript(buf, at, sid, account, device, ts);
      expect(toHex(buf.subarray(at, end))).toBe(toHex(resumeTranscript(sid, account, device, ts)));
      end = writeTicketSecretInput(buf, at, sid, account, device, tk);
      expect(toHex(buf.subarray(at, end))).toBe(toHex(ticketSecretInput(sid, account, device, tk)));
      expect(end - at).toBeLessThanOrEqual(transcriptBound(sid, account));
    }
  });

  test("too little room, and a ts that is no uint, are refused rather than written short", () => {
    expect(() => writeResumeTranscript(new Uint8Array(20), 0, "sid", "ann", 1, 5)).toThrow(/transcriptBound/);
    expect(() => writeResumeTranscript(new Uint8Array(200), 0, "sid", "ann", 1, 1.5)).toThrow(/non-negative integer/);
    expect(() => writeResumeTranscript(new Uint8Array(200), 0, "sid", "ann", 1, -1)).toThrow(/non-negative integer/);
  });
});

/** The fast encoder writes exactly what msgpackr writes (with our options), for every kind of value a stanza holds. */
import { describe, expect, test } from "bun:test";
import { decodeBody, encodeBody, encodeBodyMsgpackr } from "../../src/protocol/codec.ts";
import { HEADER_SIZE } from "../../src/protocol/frame.ts";
import { Outbound } from "../../src/protocol/outbound.ts";
import { prng } from "../helpers/prng.ts";

/**
 * The body Outbound.encodeFrame writes in place for `v` (src/protocol/encoder.ts encodeValueInto), behind a frame of
 * `pre` bytes already queued: near a pooled buffer's end (2 KiB, 16 KiB) the encode outgrows it part way through.
 */
function inPlace(v: object, pre: number): Buffer {
  let sent: Uint8Array | null = null;
  const out = new Outbound({ write: (b, n) => ((sent = b.slice(0, n)), n) });
  if (pre > 0) out.frame(new Uint8Array(pre - HEADER_SIZE).fill(0xee));
  const n = out.encodeFrame(v);
  out.flush();
  const all = sent!;
  expect(all.length).toBe(pre + HEADER_SIZE + n);
  expect(new DataView(all.buffer, all.byteOffset).getUint32(pre)).toBe(n); // its header
  expect(all.subarray(0, pre).every((b, i) => (i < HEADER_SIZE ? true : b === 0xee))).toBe(true); // what was queued before is kept
  return Buffer.from(all.subarray(pre + HEADER_SIZE));
}
const PRE = [0, 2040, 2047, 16380];

const same = (v: object) => {
  const want = Buffer.from(encodeBodyMsgpackr(v)).toString("hex");
  expect(Buffer.from(encodeBody(v)).toString("hex")).toBe(want);
  for (const pre of PRE) expect(inPlace(v, pre).toString("hex")).toBe(want);
};

describe("fast encoder", () => {
  test("integers at every size boundary, both signs, and above 32 bits", () => {
    const edges = [0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 5, 2 ** 53 - 1];
    for (const e of edges) same({ v: e }), same({ v: -e });
    for (const e of [-1, -31, -32, -33, -127, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1]) same({ v: e });
    for (const f of [0.5, -1.25, 1e300, Number.MIN_VALUE]) same({ v: f });
  });

  test("strings: ASCII and UTF-8 at every header boundary", () => {
    for (const n of [0, 1, 31, 32, 255, 256, 65535, 65536]) {
      same({ s: "a".repeat(n) });
      same({ s: "é".repeat(Math.ceil(n / 2)) });
    }
    same({ "ключ": "значение", emoji: "👋🏽", mixed: "a\u0000b" });
  });

  test("binary, arrays and maps at header boundaries; booleans, null, undefined", () => {
    for (const n of [0, 1, 255, 256, 65535, 65536]) same({ b: new Uint8Array(n).fill(7) });
    for (const n of [0, 15, 16, 65535, 65536]) same({ a: Array.from({ length: n }, (_, i) => i) });
    for (const n of [0, 15, 16, 17]) same(Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i])));
    same({ t: true, f: false, n: null, u: undefined, arr: [undefined, null, 1] });
  });

  test("20 000 random stanza-like values encode identically and decode back", () => {
    const r = prng(99);
    const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
    const gen = (depth: number): unknown => {
      switch (Math.floor(r() * (depth > 2 ? 5 : 8))) {
        case 0: return Math.floor(r() * 2 ** (1 + Math.floor(r() * 53))) * pick([1, -1]);
        case 1: return r() * 1e6 - 5e5;
        case 2: return "x".repeat(Math.floor(r() * 40)) + pick(["", "é", "中", "😀"]);
        case 3: return pick([true, false, null]);
        case 4: return new Uint8Array(Math.floor(r() * 300)).map(() => Math.floor(r() * 256));
        case 5: return Array.from({ length: Math.floor(r() * 20) }, () => gen(depth + 1));
        default: return Object.fromEntries(Array.from({ length: Math.floor(r() * 20) }, (_, i) => [`f${i}${pick(["", "é"])}`, gen(depth + 1)]));
      }
    };
    for (let i = 0; i < 20_000; i++) {
      const v = { t: "x", v: gen(0) };
      const a = encodeBody(v);
      const b = encodeBodyMsgpackr(v);
      // In place too, behind 1 984-2 047 bytes: the 2 KiB buffer runs out at a different point of each value.
      const c = inPlace(v, 1984 + (i % 64));
      if (Buffer.compare(Buffer.from(a), Buffer.from(b)) !== 0 || Buffer.compare(c, Buffer.from(b)) !== 0) {
        throw new Error(`differs for ${JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? `bin(${x.length})` : x))}`);
      }
      if (i % 1000 === 0) expect(decodeBody(a)).toEqual(decodeBody(b) as object);
    }
  });

  test("the result is a fresh buffer that a later encode does not overwrite", () => {
    const a = encodeBody({ t: "first" });
    const copy = Buffer.from(a);
    for (let i = 0; i < 1000; i++) encodeBody({ t: "other", i, s: "z".repeat(i) });
    expect(Buffer.from(a).equals(copy)).toBe(true);
  });

  test("misuse: a function or a symbol throws with what stanzas may hold", () => {
    expect(() => encodeBody({ f: () => 1 })).toThrow(/stanzas hold/);
  });
});

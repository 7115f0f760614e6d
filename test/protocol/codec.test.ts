import { describe, expect, test } from "bun:test";
import { decodeBody, decodeBodyAt, encodeBody, encodeFrame, withField } from "../../src/protocol/codec.ts";
import { ErrorCode, ProtocolError } from "../../src/protocol/errors.ts";
import { FrameDecoder } from "../../src/protocol/frame.ts";
import { validateClient, validateServer } from "../../src/protocol/stanzas.ts";
import { prng } from "../helpers/prng.ts";

const fromHex = (h: string) => Uint8Array.from((h.replace(/\s+/g, "").match(/../g) ?? []).map((x) => parseInt(x, 16)));
const toHex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

function decodeError(body: Uint8Array): ProtocolError {
  try {
    decodeBody(body);
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError);
    return e as ProtocolError;
  }
  throw new Error(`expected decodeBody(${toHex(body)}) to throw`);
}


describe("decodeBody", () => {
  test("exactly one msgpack value, else bad_frame (not fatal)", () => {
    const cases = [
      "", // empty
      "81a174", // truncated map
      "81a174a470696e67c0", // trailing byte after a complete value
      "c0c0", // two values
      "a5616263", // truncated string
      "c40a0102", // truncated bin
      "dd00000010", // array32 of 16, no elements
    ];
    for (const h of cases) {
      const e = decodeError(fromHex(h));
      expect(e.code).toBe(ErrorCode.BAD_FRAME);
      expect(e.fatal).toBe(false);
    }
  });

  test("the never-used byte 0xc1 is not a stanza", () => {
    // msgpackr decodes it to a marker object rather than throwing; validation then refuses it.
    let code: string;
    try {
      const v = validateClient(decodeBody(Uint8Array.of(0xc1)));
      code = v.ok ? "ok" : v.code;
    } catch (e) {
      code = (e as ProtocolError).code;
    }
    expect(code).toBe(ErrorCode.BAD_FRAME);
  });

  test("a frame's body decodes from a view into a bigger buffer", () => {
    const f = encodeFrame({ t: "ping", n: 5 });
    const big = new Uint8Array(f.length + 10);
    big.set(f, 7);
    let got: unknown;
    new FrameDecoder().feed(big.subarray(7, 7 + f.length), (b) => (got = decodeBody(b)));
    expect(got).toEqual({ t: "ping", n: 5 });
  });

  test("strings of one to three ASCII bytes (the decoder's table and cache) decode to themselves, however they collide", () => {
    // Every string of 1 and 2 ASCII bytes (16 512, so every slot of the 4 096-slot cache is shared), then 3-byte ones
    // from a seeded PRNG, each decoded twice: once filling its slot, once read back from it, as key and as value.
    const seed = (Math.random() * 2 ** 32) >>> 0;
    const rnd = prng(seed);
    const strings: string[] = [];
    for (let a = 0; a < 128; a++) {
      strings.push(String.fromCharCode(a));
      for (let b = 0; b < 128; b++) strings.push(String.fromCharCode(a, b));
    }
    for (let i = 0; i < 20_000; i++) strings.push(String.fromCharCode((rnd() * 128) | 0, (rnd() * 128) | 0, (rnd() * 128) | 0));
    const wrong: string[] = [];
    for (const s of strings) {
      const body = encodeBody({ [s]: s });
      for (let round = 0; round < 2; round++) {
        const got = decodeBody(body) as Record<string, unknown>;
        const keys = Object.keys(got);
        if (keys.length !== 1 || keys[0] !== s || got[s] !== s) wrong.push(`${JSON.stringify(s)} -> ${JSON.stringify(got)}`);
      }
    }
    if (wrong.length > 0) console.error(`seed ${seed}`);
    expect(wrong.slice(0, 5)).toEqual([]);
  });

  test("a body decoded where it lies in a bigger buffer (decodeBodyAt) ends at its end: the bytes after it are never read", () => {
    const body = encodeBody({ t: "msg", id: "m1", to: "bob", p: { "1": new Uint8Array([1, 2, 3]) } });
    const big = new Uint8Array(body.length + 20).fill(0xc0); // nil bytes on both sides: valid msgpack if read
    big.set(body, 10);
    expect(decodeBodyAt(big, 10, 10 + body.length)).toEqual(decodeBody(body) as object);
    // Cut short by one byte, or at every length: refused as truncated, though the buffer goes on.
    for (let cut = 1; cut < body.length; cut++) {
      let got: string | null = null;
      try {
        decodeBodyAt(big, 10, 10 + cut);
      } catch (e) {
        got = `${(e as ProtocolError).code}: ${(e as Error).message}`;
      }
      expect(got).toBe(`${ErrorCode.BAD_FRAME}: body is not valid msgpack: truncated`);
    }
    // One byte too many: the value is followed by a byte inside the span.
    expect(() => decodeBodyAt(big, 10, 11 + body.length)).toThrow("1 bytes after the value");
    expect(() => decodeBodyAt(big, 10, 10)).toThrow("empty frame body");
  });

  test("decoded bin fields are copies, not views of the body", () => {
    const body = Uint8Array.from(encodeBody({ t: "auth", u: "alice", d: 1, sig: new Uint8Array(64).fill(7) }));
    const v = decodeBody(body) as { sig: Uint8Array };
    body.fill(0);
    expect(v.sig).toEqual(new Uint8Array(64).fill(7));
    expect(v.sig.buffer).not.toBe(body.buffer);
  });
});

describe("encoding rules (PROTOCOL.md §3)", () => {
  test("integers up to 2^32-1 are msgpack ints; larger ones are written as float64", () => {
    expect(toHex(encodeBody({ q: 7 }))).toBe("81a17107");
    expect(toHex(encodeBody({ q: 2 ** 32 - 1 }))).toBe("81a171ceffffffff");
    expect(toHex(encodeBody({ q: 2 ** 32 }))).toBe("81a171cb41f0000000000000");
  });

  test("readers accept every msgpack integer encoding and integral float64 (and float32)", () => {
    const forms = [
      "07", // positive fixint
      "cc07", // uint8
      "cd0007", // uint16
      "ce00000007", // uint32
      "cf0000000000000007", // uint64
      "d007", // int8
      "d10007", // int16
      "d200000007", // int32
      "d30000000000000007", // int64
      "cb401c000000000000", // float64 7.0
      "ca40e00000", // float32 7.0
    ];
    for (const f of forms) {
      const v = decodeBody(fromHex("82a174a470696e67a16e" + f));
      expect(v).toEqual({ t: "ping", n: 7 });
      expect(validateClient(v).ok).toBe(true);
    }
    // Large values as uint64 and as float64 are the same number.
    const asU64 = decodeBody(fromHex("82a174a361636ba17191cf0000000100000007"));
    const asF64 = decodeBody(fromHex("82a174a361636ba17191cb41f0000000700000"));
    expect(asU64).toEqual({ t: "ack", q: [2 ** 32 + 7] });
    expect(asF64).toEqual(asU64);
    expect(validateClient(asU64).ok).toBe(true);
    // Above 2^53 a value is not exact any more, and is refused by the decoder itself (bad_field), so that
    // nothing decoded is a BigInt the encoder cannot write back.
    for (const big of ["cf0020000000000000", "cf7fffffffffffffff", "cfffffffffffffffff", "d3c000000000000000", "d3ffe0000000000000"]) {
      expect(() => decodeBody(fromHex("82a174a361636ba17191" + big))).toThrow(expect.objectContaining({ code: ErrorCode.BAD_FIELD }));
    }
    // 2^53 - 1 and -(2^53 - 1) as int64 are the largest exact values.
    expect(decodeBody(fromHex("82a174a361636ba17191cf001fffffffffffff"))).toEqual({ t: "ack", q: [2 ** 53 - 1] });
    expect(decodeBody(fromHex("82a174a361636ba17191d3ffe0000000000001"))).toEqual({ t: "ack", q: [-(2 ** 53 - 1)] });
    // A fractional float is not an integer.
    expect(validateClient(decodeBody(fromHex("82a174a470696e67a16ecb3ff8000000000000"))).ok).toBe(false);
  });

  test("non-minimal encodings of maps, strings and bins are accepted", () => {
    // map16 holding 2 pairs, str8 "ping", bin32 is not used by ping, so use auth with bin16/bin32 sigs.
    const ping = decodeBody(fromHex("de0002d90174d90470696e67a16e01"));
    expect(ping).toEqual({ t: "ping", n: 1 });
    const sig = "aa".repeat(64);
    for (const binHeader of ["c440", "c50040", "c600000040"]) {
      const body = fromHex(`84a174a461757468a175a5616c696365a16401a3736967${binHeader}${sig}`);
      expect(validateClient(decodeBody(body)).ok).toBe(true);
    }
  });

  test("undefined fields are left out, never written as msgpackr's fixext", () => {
    const h = toHex(encodeBody({ t: "err", e: "bad_field", m: "x", id: undefined, x: undefined }));
    expect(h).toBe(toHex(encodeBody({ t: "err", e: "bad_field", m: "x" })));
    expect(h.includes("d40000")).toBe(false);
    expect(toHex(encodeBody({ a: [undefined] }))).toBe("81a16191c0");
  });

  test("binary is written as msgpack bin, text as str", () => {
    expect(toHex(encodeBody({ b: Uint8Array.of(1, 2) }))).toBe("81a162c4020102");
    expect(toHex(encodeBody({ s: "hi" }))).toBe("81a173a26869");
  });

  test("encodeFrame prefixes the body with its length", () => {
    const body = Uint8Array.from(encodeBody({ t: "ping" }));
    const f = encodeFrame({ t: "ping" });
    expect(toHex(f)).toBe(toHex(Uint8Array.of(0, 0, 0, body.length, ...body)));
  });
});

describe("garbage never escapes as anything but ProtocolError", () => {
  const r = prng(20240601);
  const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
  const seeds = [
    { t: "msg", id: "m1", to: "bob", p: [[1, Uint8Array.of(1, 2, 3)], [2, Uint8Array.of(4)]], s: [[3, Uint8Array.of(5)]] },
    { t: "hello", v: 1, sid: "sb-test", nonce: new Uint8Array(32), mf: 65536, pi: 30, it: 90 },
    { t: "iq", id: 7, op: "devices", a: { u: "bob", deep: [[[{ x: 1.5 }]]] } },
    { t: "ack", q: [1, 2 ** 32 + 7, 3] },
    { t: "rcpt", q: 12, k: "dlv", u: "bob", d: 1, w: "bob", seq: 42, id: "m1", ts: 1700000000200 },
  ].map((s) => Uint8Array.from(encodeBody(s)));

  /** The server sends these as `err {e, m}`: that frame must pass the client SDK's own validation. */
  function expectSendable(e: string, m: string) {
    const r = validateServer({ t: "err", e, m });
    if (!r.ok) throw new Error(`err frame for ${JSON.stringify(m)} would be refused: ${r.message}`);
  }

  function check(body: Uint8Array): "rejected" | "invalid" | "valid" {
    let v: unknown;
    try {
      v = decodeBody(body);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw new Error(`decodeBody(${toHex(body)}) threw ${String(e)}`);
      // bad_field: a string that is not UTF-8 or an integer beyond ±(2^53 − 1), caught by the decoder (§3).
      expect<string[]>([ErrorCode.BAD_FRAME, ErrorCode.BAD_FIELD]).toContain(e.code);
      expect(e.fatal).toBe(false);
      expectSendable(e.code, e.message);
      return "rejected";
    }
    // Validation must never throw, whatever came out.
    const a = validateClient(v);
    const b = validateServer(v);
    expect(typeof a.ok).toBe("boolean");
    expect(typeof b.ok).toBe("boolean");
    if (!a.ok) expectSendable(a.code, a.message);
    return a.ok || b.ok ? "valid" : "invalid";
  }

  test("20000 random bodies and mutations of valid ones (seeded)", () => {
    const tally = { rejected: 0, invalid: 0, valid: 0 };
    for (let i = 0; i < 20000; i++) {
      let body: Uint8Array;
      const mode = i % 4;
      if (mode === 0) {
        body = randomBytes(1 + Math.floor(r() * 64));
      } else if (mode === 1) {
        // A map header first, so that the decoder gets further.
        body = Uint8Array.of(0x80 | Math.floor(r() * 16), 0xa1, 0x74, ...randomBytes(Math.floor(r() * 48)));
      } else {
        body = seeds[Math.floor(r() * seeds.length)]!.slice();
        const flips = Math.floor(r() * 4); // 0 flips keeps some valid
        for (let f = 0; f < flips; f++) body[Math.floor(r() * body.length)] = Math.floor(r() * 256);
        if (mode === 3) body = body.subarray(0, Math.floor(r() * (body.length + 1)));
        if (body.length === 0) body = Uint8Array.of(0xc1);
      }
      tally[check(body)]++;
    }
    // Every path was taken, so the loop did exercise both decode and validate.
    expect(tally.rejected).toBeGreaterThan(0);
    expect(tally.invalid).toBeGreaterThan(0);
    expect(tally.valid).toBeGreaterThan(0);
  });

  test("error texts stay within err.m's 256 bytes, also for non-ASCII input", () => {
    const cjk = "\u4e2d".repeat(100);
    const withTrailing = Uint8Array.from([...encodeBody({ t: "msg", id: cjk, to: cjk }), 0xc0]);
    expect(check(withTrailing)).toBe("rejected");
    expect(check(Uint8Array.from(encodeBody({ t: cjk })))).toBe("invalid");
    expect(check(Uint8Array.from(encodeBody({ t: "msg", id: cjk, to: "bob", p: [[1, Uint8Array.of(1)]] })))).toBe("invalid");
  });

  test("pathological nesting and lengths", () => {
    for (const body of [
      new Uint8Array(60000).fill(0x91), // deeply nested arrays
      new Uint8Array(60000).fill(0x81), // deeply nested maps
      fromHex("dd ffffffff"), // array of 2^32-1 elements, none present
      fromHex("df ffffffff"), // map of 2^32-1 pairs, none present
      fromHex("db ffffffff 61"), // str32 of 4 GiB
      fromHex("c6 ffffffff 00"), // bin32 of 4 GiB
      fromHex("c7 05 01 00"), // ext8
      fromHex("d6 ff 00 00 00 00"), // timestamp ext
      fromHex("d4 72 00"), // msgpackr record extension
      fromHex("81 c0 01"), // nil key
      fromHex("81 92 01 02 01"), // array key
      fromHex("81 a9 5f5f70726f746f5f5f 81 a1 74 a4 70696e67"), // __proto__ key
    ]) {
      check(body);
    }
  });

  test("validate never throws on arbitrary JavaScript values", () => {
    const weird: unknown[] = [
      Object.create(null),
      { t: "msg", p: new Array(3) },
      { t: "msg", id: "m", to: "bob", p: [[1n, Uint8Array.of(1)]] },
      { t: "ack", q: [1n] },
      { t: "hello", v: [Symbol("x")] },
      { t: "iq", id: 1, op: "x", a: Object.create(null) },
      { t: "err", e: "x", m: "y", toString: 1 },
      { t: "ping", n: { valueOf: () => 1 } },
    ];
    for (const v of weird) {
      expect(() => validateClient(v)).not.toThrow();
      expect(() => validateServer(v)).not.toThrow();
    }
  });
});

describe("withField", () => {
  test("adds one entry to an encoded fixmap: the bytes encodeBody makes of the stanza with the field last", () => {
    const r = { t: "rcpt", q: 4294967303, k: "dlv", u: "bob", d: 1, w: "bob", seq: 42, id: "m1", ts: 1700000000200 };
    for (const v of [0, 127, 65536, 1700000000123, 2 ** 53 - 1]) {
      const out = withField(encodeBody(r), "sts", v)!;
      expect([...out]).toEqual([...encodeBody({ ...r, sts: v })]);
      expect(decodeBody(out)).toEqual({ ...r, sts: v });
      expect(validateServer(decodeBody(out)).ok).toBe(true);
    }
  });

  test("refuses what is not a fixmap with room: null, the body untouched", () => {
    const full = Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`k${i}`, i]));
    const body = encodeBody(full); // 15 entries: a 16th needs a map16 header
    expect(withField(body, "x", 1)).toBeNull();
    expect(withField(encodeBody([1, 2]), "x", 1)).toBeNull();
    expect(decodeBody(body)).toEqual(full);
  });
});

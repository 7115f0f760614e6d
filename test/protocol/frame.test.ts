import { describe, expect, test } from "bun:test";
import { decodeBody } from "../../src/protocol/codec.ts";
import { ErrorCode, ProtocolError } from "../../src/protocol/errors.ts";
import { DEFAULT_MAX_FRAME, FrameDecoder, frame, HARD_MAX_FRAME, HEADER_SIZE, writeHeader } from "../../src/protocol/frame.ts";
import { prng } from "../helpers/prng.ts";

const rand = prng(42);
const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));

const concat = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

/** Feeds the chunks in order and returns copies of the bodies (views are valid only during the callback). */
function run(dec: FrameDecoder, chunks: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const c of chunks) dec.feed(c, (b) => out.push(b.slice()));
  return out;
}

// Sizes chosen to cover: empty, tiny, a header-sized body, one growing the
// scratch buffer past its initial 64 bytes, one above the 512-byte size at
// which the scratch buffer is released, and small ones after that.
const BODIES = [3, 0, 4, 1, 100, 0, 700, 2, 65, 5].map((n) => randomBytes(n));
const STREAM = concat(BODIES.map(frame));

function expectBodies(got: Uint8Array[], want: Uint8Array[] = BODIES) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(got[i]).toEqual(want[i]!);
}

function expectTooLarge(f: () => void) {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ProtocolError);
  expect((err as ProtocolError).code).toBe(ErrorCode.FRAME_TOO_LARGE);
  expect((err as ProtocolError).fatal).toBe(true);
}

describe("frame / writeHeader", () => {
  test("header is a 4-byte big-endian unsigned length", () => {
    const out = new Uint8Array(6);
    writeHeader(out, 1, 0x01020304);
    expect([...out]).toEqual([0, 1, 2, 3, 4, 0]);
    writeHeader(out, 0, 0xfffffffe);
    expect([...out.subarray(0, 4)]).toEqual([0xff, 0xff, 0xff, 0xfe]);
    expect([...frame(Uint8Array.of(9, 8))]).toEqual([0, 0, 0, 2, 9, 8]);
    expect([...frame(new Uint8Array(0))]).toEqual([0, 0, 0, 0]);
    expect(HEADER_SIZE).toBe(4);
  });
});

describe("FrameDecoder: splitting", () => {
  test("the whole stream in one chunk", () => {
    expectBodies(run(new FrameDecoder(), [STREAM]));
  });

  test("two chunks, split at every offset", () => {
    for (let k = 0; k <= STREAM.length; k++) {
      const dec = new FrameDecoder();
      const got = run(dec, [STREAM.subarray(0, k), STREAM.subarray(k)]);
      expectBodies(got);
      expect(dec.pending).toBe(false);
    }
  });

  test("two chunks, split at every offset, chunks being views at odd offsets of bigger buffers", () => {
    for (let k = 0; k <= STREAM.length; k += 7) {
      const a = new Uint8Array(k + 3);
      a.set(STREAM.subarray(0, k), 3);
      const b = new Uint8Array(STREAM.length - k + 5);
      b.set(STREAM.subarray(k), 1);
      expectBodies(run(new FrameDecoder(), [a.subarray(3), b.subarray(1, 1 + STREAM.length - k)]));
    }
  });

  test("one byte at a time", () => {
    const dec = new FrameDecoder();
    const chunks = [...STREAM].map((_, i) => STREAM.subarray(i, i + 1));
    expectBodies(run(dec, chunks));
    expect(dec.pending).toBe(false);
  });

  test("random splits into many chunks (seeded)", () => {
    const r = prng(7);
    for (let round = 0; round < 500; round++) {
      const chunks: Uint8Array[] = [];
      let off = 0;
      while (off < STREAM.length) {
        const n = Math.floor(r() * 40);
        chunks.push(STREAM.subarray(off, off + n));
        off += n;
      }
      expectBodies(run(new FrameDecoder(), chunks));
    }
  });

  test("many frames in one chunk are delivered in order", () => {
    const bodies = Array.from({ length: 1000 }, (_, i) => Uint8Array.of(i & 0xff, i >> 8, ...randomBytes(i % 9)));
    const chunk = concat(bodies.map(frame));
    const got: Uint8Array[] = [];
    new FrameDecoder().feed(chunk, (b) => {
      expect(b.buffer).toBe(chunk.buffer); // all views, no copies
      got.push(b.slice());
    });
    expectBodies(got, bodies);
  });

  test("pending tells a cut frame from a clean end", () => {
    const dec = new FrameDecoder();
    expect(dec.pending).toBe(false);
    run(dec, [STREAM.subarray(0, 2)]);
    expect(dec.pending).toBe(true);
    run(dec, [STREAM.subarray(2, HEADER_SIZE + 1)]);
    expect(dec.pending).toBe(true);
    run(dec, [STREAM.subarray(HEADER_SIZE + 1, HEADER_SIZE + 3)]);
    expect(dec.pending).toBe(false); // first body is 3 bytes
  });
});

describe("FrameDecoder: views and copies", () => {
  test("a frame inside one chunk is a view of that chunk", () => {
    const base = new Uint8Array(64);
    const f = frame(Uint8Array.of(1, 2, 3));
    base.set(f, 10);
    const chunk = base.subarray(10, 10 + f.length);
    const seen: Uint8Array[] = [];
    new FrameDecoder().feed(chunk, (b) => seen.push(b));
    expect(seen.length).toBe(1);
    expect(seen[0]!.buffer).toBe(base.buffer);
    expect(seen[0]!.byteOffset).toBe(10 + HEADER_SIZE);
    expect([...seen[0]!]).toEqual([1, 2, 3]);
  });

  test("a frame after a completed straddling one, inside the chunk, is still a view", () => {
    const f1 = frame(Uint8Array.of(1, 2, 3));
    const f2 = frame(Uint8Array.of(4, 5));
    const first = f1.slice(0, 5);
    const second = concat([f1.subarray(5), f2]);
    const seen: Uint8Array[] = [];
    const dec = new FrameDecoder();
    dec.feed(first, (b) => seen.push(b));
    expect(seen.length).toBe(0);
    dec.feed(second, (b) => seen.push(b));
    expect(seen.length).toBe(2);
    // The straddling frame was copied into the decoder's own buffer ...
    expect(seen[0]!.buffer).not.toBe(first.buffer);
    expect(seen[0]!.buffer).not.toBe(second.buffer);
    // ... the next one is a view of the chunk.
    expect(seen[1]!.buffer).toBe(second.buffer);
    expect(seen[1]!.byteOffset).toBe(second.byteOffset + (f1.length - 5) + HEADER_SIZE);
  });

  test("a straddling frame is a copy whose contents are right", () => {
    const body = randomBytes(1000);
    const f = frame(body);
    const a = f.slice(0, 300);
    const b = f.slice(300);
    const seen: Uint8Array[] = [];
    const dec = new FrameDecoder();
    dec.feed(a, (x) => seen.push(x));
    dec.feed(b, (x) => {
      expect(x.buffer).not.toBe(a.buffer);
      expect(x.buffer).not.toBe(b.buffer);
      expect(x).toEqual(body);
      seen.push(x);
    });
    expect(seen.length).toBe(1);
  });
});

describe("FrameDecoder: limits", () => {
  test("default and bounds of maxFrame", () => {
    expect(new FrameDecoder().maxFrame).toBe(DEFAULT_MAX_FRAME);
    expect(DEFAULT_MAX_FRAME).toBe(65536);
    expect(new FrameDecoder(1).maxFrame).toBe(1);
    expect(new FrameDecoder(HARD_MAX_FRAME).maxFrame).toBe(HARD_MAX_FRAME);
  });

  test("constructor misuse throws RangeError", () => {
    for (const bad of [0, -1, 1.5, NaN, Infinity, HARD_MAX_FRAME + 1, 2 ** 32]) {
      expect(() => new FrameDecoder(bad)).toThrow(RangeError);
    }
  });

  test("a body exactly at the maximum is accepted, whole or split", () => {
    const body = randomBytes(100);
    const f = frame(body);
    expectBodies(run(new FrameDecoder(100), [f]), [body]);
    for (const k of [1, 3, 4, 5, 50, 103]) expectBodies(run(new FrameDecoder(100), [f.subarray(0, k), f.subarray(k)]), [body]);
    const one = Uint8Array.of(7);
    expectBodies(run(new FrameDecoder(1), [frame(one), frame(one)]), [one, one]);
  });

  test("an oversized length is rejected from the header alone, before any body byte", () => {
    const header = new Uint8Array(4);
    writeHeader(header, 0, 101);
    expectTooLarge(() => new FrameDecoder(100).feed(header, () => {}));
    // The largest possible length is read as unsigned, not as -1.
    expectTooLarge(() => new FrameDecoder(100).feed(Uint8Array.of(0xff, 0xff, 0xff, 0xff), () => {}));
    expectTooLarge(() => new FrameDecoder(HARD_MAX_FRAME).feed(Uint8Array.of(0x80, 0, 0, 0), () => {}));
  });

  test("an oversized length is rejected when the header itself arrives split", () => {
    const header = new Uint8Array(4);
    writeHeader(header, 0, DEFAULT_MAX_FRAME + 1);
    for (let k = 1; k < 4; k++) {
      const dec = new FrameDecoder();
      dec.feed(header.subarray(0, k), () => expect.unreachable());
      expectTooLarge(() => dec.feed(header.subarray(k), () => expect.unreachable()));
    }
    const dec = new FrameDecoder();
    for (let i = 0; i < 3; i++) dec.feed(header.subarray(i, i + 1), () => expect.unreachable());
    expectTooLarge(() => dec.feed(header.subarray(3), () => expect.unreachable()));
  });

  test("frames before the oversized one in the same chunk are delivered first", () => {
    const good = Uint8Array.of(1, 2);
    const bad = new Uint8Array(4);
    writeHeader(bad, 0, 11);
    const chunk = concat([frame(good), frame(good), bad]);
    const seen: Uint8Array[] = [];
    expectTooLarge(() => new FrameDecoder(10).feed(chunk, (b) => seen.push(b.slice())));
    expectBodies(seen, [good, good]);
    // Also after a straddling frame completes in the same chunk.
    const dec = new FrameDecoder(10);
    const seen2: Uint8Array[] = [];
    dec.feed(frame(good).subarray(0, 5), (b) => seen2.push(b.slice()));
    expectTooLarge(() => dec.feed(concat([frame(good).subarray(5), bad]), (b) => seen2.push(b.slice())));
    expectBodies(seen2, [good]);
  });
});

describe("FrameDecoder: empty frames", () => {
  test("a zero-length frame is delivered as an empty body, which decodeBody rejects as bad_frame", () => {
    const bodies: Uint8Array[] = [];
    new FrameDecoder().feed(Uint8Array.of(0, 0, 0, 0), (b) => bodies.push(b.slice()));
    expect(bodies.length).toBe(1);
    expect(bodies[0]!.length).toBe(0);
    let err: unknown;
    try {
      decodeBody(bodies[0]!);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as ProtocolError).code).toBe(ErrorCode.BAD_FRAME);
    expect((err as ProtocolError).fatal).toBe(false);
  });

  test("empty frames split at every offset", () => {
    const stream = concat([frame(new Uint8Array(0)), frame(new Uint8Array(0)), frame(Uint8Array.of(5)), frame(new Uint8Array(0))]);
    const want = [new Uint8Array(0), new Uint8Array(0), Uint8Array.of(5), new Uint8Array(0)];
    for (let k = 0; k <= stream.length; k++) {
      expectBodies(run(new FrameDecoder(), [stream.subarray(0, k), stream.subarray(k)]), want);
    }
  });
});

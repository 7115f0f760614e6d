import { describe, expect, test } from "bun:test";
import { encodeBody, withField } from "../../src/protocol/codec.ts";
import { FrameDecoder, HEADER_SIZE, frame } from "../../src/protocol/frame.ts";
import { FlushBatch, Outbound, pooledBuffers, type Sink } from "../../src/protocol/outbound.ts";
import { prng } from "../helpers/prng.ts";

const rand = prng(7);
const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));

// Empty, tiny, a header-sized body, and a few larger ones; small enough that every write size fits in a test run.
const BODIES = [3, 0, 4, 1, 100, 0, 300, 2, 65, 5].map((n) => randomBytes(n));
const TOTAL = BODIES.reduce((n, b) => n + HEADER_SIZE + b.length, 0);

/** A sink that accepts at most `k` bytes per write (what Bun's write() does when the kernel buffer is full), recording each call. */
class PartialSink implements Sink {
  received: number[] = [];
  calls = 0;
  constructor(public k: number) {}
  write(bytes: Uint8Array, length: number): number {
    this.calls++;
    if (this.k < 0) return -1;
    const n = Math.min(this.k, length);
    for (let i = 0; i < n; i++) this.received.push(bytes[i]!);
    return n;
  }
}

function decode(bytes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  const dec = new FrameDecoder();
  dec.feed(Uint8Array.from(bytes), (b) => out.push(b.slice()));
  expect(dec.pending).toBe(false);
  return out;
}

function expectBodies(got: Uint8Array[]) {
  expect(got.length).toBe(BODIES.length);
  for (let i = 0; i < BODIES.length; i++) expect(got[i]).toEqual(BODIES[i]!);
}

describe("Outbound: partial writes", () => {
  test("the sink accepts k bytes per write, for every k from 0 to the total: each flush is one write, nothing is lost or reordered", () => {
    for (let k = 0; k <= TOTAL; k++) {
      const sink = new PartialSink(k);
      const out = new Outbound(sink);
      // Half the frames, one flush, the rest appended behind whatever tail the sink refused.
      const half = BODIES.length / 2;
      for (let i = 0; i < half; i++) out.frame(BODIES[i]!);
      let queued = BODIES.slice(0, half).reduce((n, b) => n + HEADER_SIZE + b.length, 0);
      expect(out.unsent).toBe(queued);
      const first = out.flush();
      expect(first).toBe(Math.min(k, queued));
      expect(sink.calls).toBe(1);
      expect(out.unsent).toBe(queued - first);
      for (let i = half; i < BODIES.length; i++) out.frame(BODIES[i]!);
      expect(out.unsent).toBe(TOTAL - first);
      if (k === 0) {
        // Nothing goes out while the sink takes nothing (a full socket), and nothing is dropped either.
        expect(out.flush()).toBe(0);
        expect(out.unsent).toBe(TOTAL);
        sink.k = TOTAL; // `drain`: the socket takes everything now
      }
      let flushes = 0;
      while (out.unsent > 0) {
        const before = out.unsent;
        const n = out.flush();
        expect(n).toBe(Math.min(sink.k, before));
        expect(out.unsent).toBe(before - n);
        if (++flushes > TOTAL + 1) throw new Error(`k=${k}: no progress`);
      }
      expect(sink.received.length).toBe(TOTAL);
      expectBodies(decode(sink.received));
      expect(out.flush()).toBe(0); // nothing left: no write at all
    }
  });

  test("-1 (closed): flush reports it and drops what was queued, with one write", () => {
    const sink = new PartialSink(-1);
    const out = new Outbound(sink);
    for (const b of BODIES) out.frame(b);
    expect(out.flush()).toBe(-1);
    expect(out.unsent).toBe(0);
    expect(out.tail()).toBeNull();
    expect(out.flush()).toBe(0);
    expect(sink.calls).toBe(1);
  });

  test("-1 after a partial write drops the tail", () => {
    const sink = new PartialSink(10);
    const out = new Outbound(sink);
    for (const b of BODIES) out.frame(b);
    expect(out.flush()).toBe(10);
    sink.k = -1;
    expect(out.flush()).toBe(-1);
    expect(out.unsent).toBe(0);
  });

  test("a sink that clears the buffer while writing (a close handler run from write) leaves it empty, not broken", () => {
    let out!: Outbound;
    const sink: Sink = {
      write: (_bytes, length) => {
        out.clear();
        return Math.min(3, length);
      },
    };
    out = new Outbound(sink);
    for (const b of BODIES) out.frame(b);
    expect(out.flush()).toBe(3);
    expect(out.unsent).toBe(0);
    out.frame(BODIES[4]!); // usable again
    expect(out.unsent).toBe(HEADER_SIZE + BODIES[4]!.length);
  });

  test("frames larger than a pooled buffer grow it, keeping the unsent tail, at a few write sizes", () => {
    const big = [randomBytes(20_000), randomBytes(3), randomBytes(70_000), randomBytes(1)];
    const total = big.reduce((n, b) => n + HEADER_SIZE + b.length, 0);
    for (const k of [0, 1, 4093, 16 * 1024, 20_003, total - 1, total]) {
      const sink = new PartialSink(k);
      const out = new Outbound(sink);
      out.frame(big[0]!);
      out.flush();
      for (const b of big.slice(1)) out.frame(b);
      if (k === 0) sink.k = total;
      while (out.unsent > 0) out.flush();
      const got: Uint8Array[] = [];
      new FrameDecoder(1 << 20).feed(Uint8Array.from(sink.received), (b) => got.push(b.slice()));
      expect(got.length).toBe(big.length);
      for (let i = 0; i < big.length; i++) expect(got[i]).toEqual(big[i]!);
    }
  });
});

describe("Outbound: pooled buffers", () => {
  test("a turn of small frames on many connections keeps small buffers only (a login storm's hello and ready: BENCHMARKS.md memory4)", () => {
    const before = pooledBuffers();
    // As a pacing turn does: every connection gets its frame before the one flush, so all borrow at once.
    const outs = Array.from({ length: 100 }, () => new Outbound(new PartialSink(1 << 20)));
    for (const o of outs) o.frame(randomBytes(300));
    for (const o of outs) expect(o.flush()).toBe(HEADER_SIZE + 300);
    const after = pooledBuffers();
    expect(after.large).toBe(before.large);
    expect(after.small).toBe(Math.max(before.small, 100));
  });

  test("frames that outgrow the small buffer move to a large one, the unsent tail kept, the small one given back", () => {
    const bodies = [randomBytes(1500), randomBytes(1500), randomBytes(9000), randomBytes(40)];
    const total = bodies.reduce((n, b) => n + HEADER_SIZE + b.length, 0);
    for (const k of [0, 1, 1000, 2048, 3000, total]) {
      const sink = new PartialSink(k);
      const out = new Outbound(sink);
      out.frame(bodies[0]!);
      out.flush(); // k bytes out, the rest stays at the front of the small buffer
      const held = pooledBuffers();
      for (const b of bodies.slice(1)) out.frame(b); // past 2 KiB: moved to a 16 KiB buffer
      if (k < HEADER_SIZE + 1500) expect(pooledBuffers().small).toBe(held.small + 1);
      sink.k = total;
      while (out.unsent > 0) out.flush();
      const got: Uint8Array[] = [];
      new FrameDecoder(1 << 20).feed(Uint8Array.from(sink.received), (b) => got.push(b.slice()));
      expect(got.length).toBe(bodies.length);
      for (let i = 0; i < bodies.length; i++) expect(got[i]).toEqual(bodies[i]!);
    }
  });
});

describe("Outbound: in-place frames, tail", () => {
  test("reserve + commit writes bytes in place, behind queued frames", () => {
    const sink = new PartialSink(1 << 20);
    const out = new Outbound(sink);
    out.frame(BODIES[0]!);
    const f = frame(BODIES[4]!);
    const buf = out.reserve(f.length);
    buf.set(f, out.unsent);
    out.commit(f.length);
    out.flush();
    const got = decode(sink.received);
    expect(got).toEqual([BODIES[0]!, BODIES[4]!]);
  });

  test("frameFrom(src, n) frames exactly src[0, n) (the encoder's scratch, longer than the body), at the copy loop's bound and past it", () => {
    const src = randomBytes(400);
    const sizes = [0, 1, 63, 64, 65, 300, 400];
    const sink = new PartialSink(1 << 20);
    const out = new Outbound(sink);
    for (const n of sizes) out.frameFrom(src, n);
    out.frame(BODIES[4]!); // frame() is frameFrom of the whole body
    expect(out.unsent).toBe(sizes.reduce((t, n) => t + HEADER_SIZE + n, 0) + HEADER_SIZE + BODIES[4]!.length);
    out.flush();
    expect(decode(sink.received)).toEqual([...sizes.map((n) => src.slice(0, n)), BODIES[4]!]);
  });

  test("frameWithField: withField's bytes, framed in place behind what is queued (also outgrowing the buffer); -1 and nothing appended for a body that cannot take it", () => {
    const r = { t: "rcpt", q: 4294967303, k: "dlv", u: "bob", d: 1, w: "bob", seq: 42, id: "m1", ts: 1700000000200 };
    for (const pre of [0, 1990, 2047, 16380]) {
      const sink = new PartialSink(1 << 20);
      const out = new Outbound(sink);
      const filler = randomBytes(Math.max(0, pre - HEADER_SIZE));
      if (pre > 0) out.frame(filler);
      const n = out.frameWithField(encodeBody(r), "sts", 1700000000123);
      expect(out.frameWithField(encodeBody(Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`k${i}`, i]))), "x", 1)).toBe(-1);
      expect(out.frameWithField(encodeBody([1, 2]), "x", 1)).toBe(-1);
      out.flush();
      const want = withField(encodeBody(r), "sts", 1700000000123)!;
      expect(n).toBe(want.length);
      expect(decode(sink.received)).toEqual(pre > 0 ? [filler, want] : [want]);
    }
  });

  test("fits(): after appending past the limit, written first; kept when the rest is within the limit or only that frame", () => {
    const fast = new PartialSink(1 << 20);
    const a = new Outbound(fast, 100);
    a.frame(randomBytes(90));
    const n = a.encodeFrame({ t: "x", b: randomBytes(40) });
    expect(a.fits(HEADER_SIZE + n)).toBe(true); // the peer reads at full speed: all of it went out
    expect(a.unsent).toBe(0);

    const slow = new PartialSink(10);
    const b = new Outbound(slow, 100);
    b.frame(randomBytes(90));
    const m = b.encodeFrame({ t: "x", b: randomBytes(40) });
    expect(b.fits(HEADER_SIZE + m)).toBe(false); // 84 of the first frame and all of this one still unsent: over the limit
    const c = new Outbound(new PartialSink(0), 100);
    expect(c.fits(HEADER_SIZE + c.encodeFrame({ t: "x", b: randomBytes(500) }))).toBe(true); // a frame alone above the limit
    expect(c.fits(HEADER_SIZE + c.encodeFrame({ t: "y" }))).toBe(false);
  });

  test("the sink is handed the buffer and the length to write, not a view: it writes bytes[0, length) only", () => {
    const seen: number[] = [];
    const sink: Sink = {
      write: (bytes, length) => {
        seen.push(bytes.length, length);
        return length;
      },
    };
    const out = new Outbound(sink);
    out.frame(BODIES[4]!);
    expect(out.flush()).toBe(HEADER_SIZE + BODIES[4]!.length);
    expect(seen[0]).toBeGreaterThan(seen[1]!); // the pooled buffer, longer than what is queued
    expect(seen[1]).toBe(HEADER_SIZE + BODIES[4]!.length);
  });

  test("tail() is a copy of exactly the unsent bytes", () => {
    const sink = new PartialSink(5);
    const out = new Outbound(sink);
    for (const b of BODIES) out.frame(b);
    out.flush();
    const t = out.tail()!;
    expect(t.length).toBe(TOTAL - 5);
    out.clear();
    expect(out.unsent).toBe(0);
    expectBodies(decode([...sink.received, ...t])); // the copy survives clear()
  });
});

describe("Outbound: the limit", () => {
  test("room() under the limit: yes, without writing", () => {
    const sink = new PartialSink(0);
    const out = new Outbound(sink, 100);
    out.frame(randomBytes(50));
    expect(out.room(46)).toBe(true);
    expect(sink.calls).toBe(0);
  });

  test("room() over the limit writes first and judges what the sink refused", () => {
    const fast = new PartialSink(1 << 20);
    const a = new Outbound(fast, 100);
    a.frame(randomBytes(90));
    expect(a.room(50)).toBe(true); // the peer reads at full speed: all of it went out
    expect(fast.calls).toBe(1);
    expect(a.unsent).toBe(0);

    const slow = new PartialSink(10);
    const b = new Outbound(slow, 100);
    b.frame(randomBytes(90));
    expect(b.room(50)).toBe(false); // 84 still unsent + 50 > 100: the caller decides (the server closes it as a slow consumer)
    expect(b.unsent).toBe(84);
    expect(b.room(16)).toBe(true);
  });

  test("a frame alone above the limit is let through when nothing is unsent", () => {
    const sink = new PartialSink(0);
    const out = new Outbound(sink, 100);
    expect(out.room(500)).toBe(true);
    out.frame(randomBytes(496));
    expect(out.room(1)).toBe(false);
  });

  test("an explicit budget (the server's half-limit for deliveries) is judged the same way", () => {
    const sink = new PartialSink(0);
    const out = new Outbound(sink, 100);
    out.frame(randomBytes(40));
    expect(out.room(10, 50)).toBe(false);
    expect(out.room(6, 50)).toBe(true);
  });
});

describe("FlushBatch", () => {
  class Item {
    flushQueued = false;
    flushes = 0;
    flush() {
      this.flushes++;
    }
  }

  test("an item added many times is flushed once per flushAll, and one callback is scheduled per turn", () => {
    const scheduled: (() => void)[] = [];
    const batch = new FlushBatch((fn) => scheduled.push(fn));
    const a = new Item();
    const b = new Item();
    batch.add(a);
    batch.add(b);
    batch.add(a);
    expect(scheduled.length).toBe(1);
    scheduled[0]!();
    expect([a.flushes, b.flushes]).toEqual([1, 1]);
    expect(a.flushQueued).toBe(false);
    batch.add(a);
    expect(scheduled.length).toBe(2);
    batch.flushAll(); // an explicit flush (a shutdown's)
    expect(a.flushes).toBe(2);
    scheduled[1]!(); // the scheduled one finds nothing left
    expect([a.flushes, b.flushes]).toEqual([2, 1]);
  });

  test("while held, what is listed schedules nothing and the outermost release flushes it once, in a microtask", async () => {
    const scheduled: (() => void)[] = [];
    const batch = new FlushBatch((fn) => scheduled.push(fn));
    const a = new Item();
    const b = new Item();
    batch.hold(); // a read
    batch.add(a);
    batch.hold(); // a nested one (a close inside the read)
    batch.add(b);
    batch.release();
    expect([a.flushes, b.flushes]).toEqual([0, 0]);
    batch.add(a);
    const c = new Item();
    queueMicrotask(() => batch.add(c)); // what the read set off for its microtasks (a durable callback's sent)
    batch.release();
    expect([a.flushes, b.flushes, c.flushes]).toEqual([0, 0, 0]);
    await Promise.resolve();
    await Promise.resolve();
    expect([a.flushes, b.flushes, c.flushes]).toEqual([1, 1, 1]);
    expect(scheduled.length).toBe(0);
    batch.add(a); // outside any hold (a timer's callback): scheduled as before
    expect(scheduled.length).toBe(1);
    expect(() => batch.release()).toThrow("hold()");
  });

  test("a flushAll before the scheduled callback runs does not make the next add schedule another", () => {
    const scheduled: (() => void)[] = [];
    const batch = new FlushBatch((fn) => scheduled.push(fn));
    const a = new Item();
    batch.add(a);
    batch.flushAll();
    batch.add(a);
    expect(scheduled.length).toBe(1); // the pending one will flush it
    scheduled[0]!();
    expect(a.flushes).toBe(2);
    batch.add(a);
    expect(scheduled.length).toBe(2);
  });

  test("an item listed during flushAll goes out in the same pass", () => {
    const batch = new FlushBatch(() => {});
    const late = new Item();
    const first = { flushQueued: false, flush: () => batch.add(late) };
    batch.add(first);
    batch.flushAll();
    expect(late.flushes).toBe(1);
  });

  test("one item whose flush throws does not strand the others", () => {
    const batch = new FlushBatch(() => {});
    const bad = { flushQueued: false, flush: () => { throw new Error("boom"); } };
    const good = new Item();
    batch.add(bad);
    batch.add(good);
    expect(() => batch.flushAll()).toThrow("boom");
    expect(good.flushes).toBe(1);
    expect([bad.flushQueued, good.flushQueued]).toEqual([false, false]);
    batch.add(good);
    batch.flushAll();
    expect(good.flushes).toBe(2);
  });
});

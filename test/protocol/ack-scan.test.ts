/** scanAck takes exactly the acks the general path (decode + validate) takes, as the same stanza, and gives up on the rest. */
import { describe, expect, test } from "bun:test";
import { scanAck } from "../../src/protocol/ack-scan.ts";
import { decodeBody, encodeBody, encodeBodyMsgpackr } from "../../src/protocol/codec.ts";
import { LIMITS, validateClient } from "../../src/protocol/stanzas.ts";
import { prng } from "../helpers/prng.ts";

/** What the general path makes of `body`: the valid stanza, or null (refused). */
function general(body: Uint8Array): unknown {
  let d: unknown;
  try {
    d = decodeBody(body);
  } catch {
    return null;
  }
  const v = validateClient(d);
  return v.ok ? v.stanza : null;
}

/** scanAck at an offset inside a larger buffer (a frame in its read's chunk), with bytes around it. */
function scanned(body: Uint8Array, pad = 3): unknown {
  const buf = new Uint8Array(body.length + 2 * pad).fill(0xcb);
  buf.set(body, pad);
  return scanAck(buf, pad, pad + body.length);
}

const EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, 2 ** 53 - 1];

describe("scanAck", () => {
  test("the acks clients send (q, sc, both, either order; every integer form up to 2^53 - 1): the general path's stanza, keys in the same order", () => {
    const bodies: object[] = [];
    for (const v of EDGES) {
      bodies.push({ t: "ack", q: [v] }, { t: "ack", sc: v }, { t: "ack", q: [v, 1, v], sc: v }, { t: "ack", sc: v, q: [v] });
    }
    bodies.push({ t: "ack", q: Array.from({ length: 15 }, (_, i) => i * 1000) }, { t: "ack", q: Array.from({ length: 16 }, (_, i) => 2 ** 33 + i) });
    bodies.push({ t: "ack", q: Array.from({ length: LIMITS.acks }, (_, i) => i) });
    for (const b of bodies) {
      for (const body of [encodeBody(b), encodeBodyMsgpackr(b)]) {
        const want = general(body);
        expect(want).not.toBeNull();
        const got = scanned(body);
        expect(got).toEqual(want as object);
        expect(Object.keys(got as object)).toEqual(Object.keys(want as object));
      }
    }
  });

  test("what the general path refuses, or that is not an ack, is left to it (null)", () => {
    const f64 = (v: number) => {
      const b = new Uint8Array(9);
      b[0] = 0xcb;
      new DataView(b.buffer).setFloat64(1, v);
      return [...b];
    };
    const raw = (...bytes: number[]) => Uint8Array.from(bytes);
    const T_ACK = [0xa1, 0x74, 0xa3, 0x61, 0x63, 0x6b];
    const Q = [0xa1, 0x71];
    const SC = [0xa2, 0x73, 0x63];
    const cases: Uint8Array[] = [
      encodeBody({ t: "ack" }), // neither q nor sc: dispatch refuses it, the general path builds it
      encodeBody({ t: "ack", q: [] }),
      encodeBody({ t: "ack", q: Array.from({ length: LIMITS.acks + 1 }, (_, i) => i) }),
      encodeBody({ t: "ack", q: [-1] }),
      encodeBody({ t: "ack", q: [1.5] }),
      encodeBody({ t: "ack", sc: -5 }),
      encodeBody({ t: "ack", q: [2 ** 53] }),
      encodeBody({ t: "ack", q: [1], x: 1 }),
      encodeBody({ q: [1], t: "ack" }), // t not first: valid, but not the usual form
      encodeBody({ t: "acks", q: [1] }),
      encodeBody({ t: "msg", q: [1] }),
      encodeBody({ t: "ack", q: null as unknown as number[] }),
      encodeBody({ t: "ack", q: [1], sc: null as unknown as number }),
      raw(0x82, ...T_ACK, ...Q, 0x91, ...f64(-0.5)),
      raw(0x82, ...T_ACK, ...Q, 0x91, ...f64(Number.NaN)),
      raw(0x82, ...T_ACK, ...Q, 0x91, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1), // uint64: the general path's to judge
      raw(0x82, ...T_ACK, ...Q, 0x91, 0xca, 0x3f, 0x80, 0, 0), // float32 1.0
      raw(0x82, ...T_ACK, ...Q, 0x91, 0xd0, 0x05), // int8 5
      raw(0x83, ...T_ACK, ...Q, 0x91, 0x01, ...Q, 0x91, 0x02), // q twice
      raw(0x83, ...T_ACK, ...SC, 0x01, ...SC, 0x02), // sc twice
      raw(0x82, ...T_ACK, ...Q, 0x91, 0x01, 0x00), // a byte after the map
      raw(0x82, ...T_ACK, ...Q, 0x92, 0x01), // truncated
      raw(0x82, ...T_ACK, ...SC), // truncated
      raw(0x82, ...T_ACK, ...Q, 0xdc, 0x00), // truncated array16 header
    ];
    for (const body of cases) expect(scanned(body)).toBeNull();
  });

  test("random corruptions of valid acks: whatever scanAck takes, the general path takes as the same stanza", () => {
    const seed = (Math.random() * 2 ** 32) >>> 0;
    const r = prng(seed);
    const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
    let taken = 0;
    try {
      for (let i = 0; i < 20_000; i++) {
        const q = Array.from({ length: 1 + Math.floor(r() * 20) }, () => pick(EDGES));
        const base = pick<object>([{ t: "ack", q }, { t: "ack", sc: pick(EDGES) }, { t: "ack", q, sc: pick(EDGES) }]);
        const body = Uint8Array.from(encodeBody(base));
        // Up to three byte changes, then sometimes a cut or an extra byte.
        for (let k = Math.floor(r() * 4); k > 0; k--) body[Math.floor(r() * body.length)] = pick([0x00, 0x7f, 0x80, 0x90, 0x91, 0xa1, 0xa2, 0xc0, 0xcb, 0xcc, 0xce, 0xcf, 0xdc, 0xff, Math.floor(r() * 256)]);
        const cut = r() < 0.2 ? body.subarray(0, Math.floor(r() * body.length)) : r() < 0.1 ? Uint8Array.from([...body, Math.floor(r() * 256)]) : body;
        const got = scanned(cut);
        if (got === null) continue;
        taken++;
        const want = general(cut);
        expect(got).toEqual(want as object);
        expect(Object.keys(got as object)).toEqual(Object.keys(want as object));
      }
    } catch (e) {
      console.error(`scanAck random corruptions: seed ${seed}`);
      throw e;
    }
    expect(taken).toBeGreaterThan(1000); // the unchanged ones at least: the comparison ran
  });
});

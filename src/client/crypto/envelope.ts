/**
 * The wire envelope of a one-to-one payload: what goes into `msg.p` for one
 * device. Opaque to the server.
 *
 *   payload = 0x01 (envelope version) ‖ msgpack map
 *
 * | t | kind | fields |
 * |---|---|---|
 * | 1 | ratchet message | `h` bin 40 (ratchet header), `c` bin (AES-256-GCM ciphertext ‖ tag) |
 * | 2 | prekey message | `ik` bin 32, `dh` bin 32, `dhs` bin 64 (the initiator's identity), `e` bin 32 (its ephemeral key), `s` uint (signed prekey id), `o` uint (one-time prekey id, absent if none was used), `h`, `c` as in t=1 |
 * | 0 | notice, not encrypted | `r` str: why the sender could not encrypt for this device (`no_keys`: it published none; `no_session`: no bundle could be had) |
 *
 * An initiator sends t=2 until its session has received a message from the
 * responder, so that a lost first message does not leave the responder
 * unable to set the session up (as Signal does).
 */
import { Packr } from "msgpackr";
import { encodeValue } from "../../protocol/encoder.ts";

export const ENVELOPE_VERSION = 1;

const packr = new Packr({
  useRecords: false, mapsAsObjects: true, moreTypes: false, bundleStrings: false,
  encodeUndefinedAsNil: true, copyBuffers: true,
  ...({ int64AsType: "auto", skipValues: [undefined] } as object),
});

/**
 * msgpack with the protocol's plain settings (no msgpackr extensions), through
 * the protocol's own encoder: same bytes as msgpackr, several times faster
 * for these small maps (src/protocol/encoder.ts).
 */
export function pack(v: unknown): Uint8Array {
  return encodeValue(v);
}

/** Decodes msgpack; undefined when the bytes are not exactly one value. */
export function unpack(b: Uint8Array): unknown {
  try {
    return packr.unpack(b);
  } catch {
    return undefined;
  }
}

export interface RatchetEnvelope {
  t: 1;
  h: Uint8Array;
  c: Uint8Array;
}
export interface PreKeyEnvelope {
  t: 2;
  ik: Uint8Array;
  dh: Uint8Array;
  dhs: Uint8Array;
  e: Uint8Array;
  s: number;
  o?: number;
  h: Uint8Array;
  c: Uint8Array;
}
export interface NoticeEnvelope {
  t: 0;
  r: string;
}
export type Envelope = RatchetEnvelope | PreKeyEnvelope | NoticeEnvelope;

export function encodeEnvelope(e: Envelope): Uint8Array {
  const body = pack(e);
  const out = new Uint8Array(body.length + 1);
  out[0] = ENVELOPE_VERSION;
  out.set(body, 1);
  return out;
}

const bin = (v: unknown, len?: number): v is Uint8Array => v instanceof Uint8Array && (len === undefined || v.length === len);
const u32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;

/** The envelope, or a reason (`bad_version`, `bad_envelope`) when the bytes are not one. */
export function decodeEnvelope(b: Uint8Array): Envelope | { bad: string } {
  if (!(b instanceof Uint8Array) || b.length < 2) return { bad: "bad_envelope" };
  if (b[0] !== ENVELOPE_VERSION) return { bad: "bad_version" };
  const v = unpack(b.subarray(1)) as Record<string, unknown> | undefined;
  if (!v || typeof v !== "object" || Array.isArray(v)) return { bad: "bad_envelope" };
  switch (v.t) {
    case 1:
      if (bin(v.h, 40) && bin(v.c)) return { t: 1, h: v.h, c: v.c };
      break;
    case 2:
      if (bin(v.ik, 32) && bin(v.dh, 32) && bin(v.dhs, 64) && bin(v.e, 32) && u32(v.s) && (v.o === undefined || v.o === null || u32(v.o)) && bin(v.h, 40) && bin(v.c)) {
        const e: PreKeyEnvelope = { t: 2, ik: v.ik, dh: v.dh, dhs: v.dhs, e: v.e, s: v.s, h: v.h, c: v.c };
        if (typeof v.o === "number") e.o = v.o;
        return e;
      }
      break;
    case 0:
      if (typeof v.r === "string") return { t: 0, r: v.r };
      break;
  }
  return { bad: "bad_envelope" };
}

/**
 * Body codec: standard msgpack through msgpackr, with msgpackr's own
 * extensions (records, structured clone) off so that any msgpack library can
 * read what we write. No I/O.
 */
import { Packr } from "msgpackr";
import { ErrorCode, ProtocolError } from "./errors.ts";
import { frame } from "./frame.ts";
import { encodeValue, encodeWithEntry } from "./encoder.ts";
import { decodeValue, decodeValueAt } from "./decoder.ts";

// int64AsType "auto": a msgpack uint64/int64 (which some libraries write even
// for small values) decodes to a number up to 2^53, not a BigInt that the
// validator would refuse (docs/PROTOCOL.md §3).
// skipValues/encodeUndefinedAsNil: an `undefined` field is left out instead of
// being written as msgpackr's private fixext (d4 00 00).
// copyBuffers: decoded bin fields are copies, not views of the frame body,
// which the FrameDecoder reuses once the frame callback returns.
const packr = new Packr({
  useRecords: false, mapsAsObjects: true, moreTypes: false, bundleStrings: false,
  encodeUndefinedAsNil: true, copyBuffers: true,
  ...({ int64AsType: "auto", skipValues: [undefined] } as object), // options missing from msgpackr's typings
});

/**
 * Encodes a stanza body with our own encoder (same bytes as msgpackr with the
 * options above, much faster; test/protocol/encoder.test.ts). The result is a
 * fresh buffer, safe to keep.
 */
export function encodeBody(stanza: object): Uint8Array {
  return encodeValue(stanza);
}

/**
 * An encoded body with one more entry: `body` must be a fixmap (up to 14 entries) whose keys do not include `key`;
 * null otherwise. The entry goes last, with the encoder's own bytes for it, so the result is what encodeBody would
 * make of the stanza with the field added (map order aside). Costs a copy of the body and the entry's encoding, not a re-encoding.
 */
export function withField(body: Uint8Array, key: string, value: unknown): Uint8Array | null {
  return takesField(body) ? encodeWithEntry(body, key, value) : null;
}

/** Whether withField can add an entry to `body`: a fixmap of up to 14 entries (Outbound.frameWithField too). */
export function takesField(body: Uint8Array): boolean {
  const h = body[0]!;
  return h >= 0x80 && h < 0x8f;
}

/** The same, through msgpackr: the reference the fast encoder is tested against. */
export function encodeBodyMsgpackr(stanza: object): Uint8Array {
  return packr.pack(stanza);
}

/** Encodes a stanza as a whole frame (header + body) in a fresh buffer. */
export function encodeFrame(stanza: object): Uint8Array {
  return frame(encodeBody(stanza));
}

/**
 * Decodes one body with the strict decoder (src/protocol/decoder.ts); throws a
 * non-fatal ProtocolError for anything that is not exactly one msgpack value
 * of the protocol's profile (§3): `bad_frame`, or `bad_field` for a string
 * that is not UTF-8 or an integer beyond ±(2^53 − 1).
 */
export function decodeBody(body: Uint8Array): unknown {
  if (body.length === 0) throw new ProtocolError(ErrorCode.BAD_FRAME, "empty frame body");
  return decodeValue(body);
}

/** decodeBody of the body at `buf[start, end)` (a frame where it lies in its chunk: FrameDecoder.scan), with no view made of it. */
export function decodeBodyAt(buf: Uint8Array, start: number, end: number): unknown {
  if (end === start) throw new ProtocolError(ErrorCode.BAD_FRAME, "empty frame body");
  return decodeValueAt(buf, start, end);
}

/** The same, through msgpackr (lenient): the reference the strict decoder is measured against. */
export function decodeBodyMsgpackr(body: Uint8Array): unknown {
  return packr.unpack(body);
}

/**
 * The byte strings a device signs to prove it holds its key. Binding the
 * purpose, the server id and the connection's fresh nonce makes a proof
 * useless for any other login, any other server or any later connection.
 * No I/O; the signature itself is Ed25519 (RFC 8032) over these bytes.
 */
export type ProofPurpose = "auth" | "enroll" | "link";

const enc = new TextEncoder();

/**
 * `"switchboard/1/" purpose 0x00 sid 0x00 nonce(32 bytes) 0x00 account 0x00 device(uint32 BE)`
 *
 * `device` is 0 for enroll and link, where the server has not assigned one yet.
 */
export function proofTranscript(purpose: ProofPurpose, sid: string, nonce: Uint8Array, account: string, device: number): Uint8Array {
  if (nonce.length !== 32) throw new RangeError(`proofTranscript: nonce must be 32 bytes, got ${nonce.length}`);
  const parts = [enc.encode(`switchboard/1/${purpose}`), enc.encode(sid), nonce, enc.encode(account)];
  let size = 4;
  for (const p of parts) size += p.length + 1;
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
    out[off++] = 0;
  }
  new DataView(out.buffer).setUint32(off, device >>> 0, false);
  return out;
}

/**
 * End-to-end encrypted call payloads (the SDP and ICE candidates), with the
 * sessions a SecureClient holds: each payload is one Double Ratchet message
 * for one device, as a message is. A signal that is lost on the way (call
 * signals are never queued) is a skipped message key to the ratchet, which
 * the next one survives. The sessions are the ones messaging set up; a device
 * with none gets no ring from `seal` (send it a message first, which fetches
 * its keys).
 *
 * @example
 * const sc = secureCalls(secure);
 * const id = await callControl(client).call("bob", (d) => sc.seal("bob", d, sdpBytes));
 * client.on("call", (s) => { const sdp = sc.open(s); ... });
 */
import type { SecureClient } from "./secure.ts";
import type { CallSignal } from "./types.ts";

export interface SecureCalls {
  /** The payload for one device; throws (with the fix) when there is no session with it. */
  seal(account: string, device: number, plaintext: Uint8Array): Uint8Array;
  /** The plaintext of a received signal's payload, or null (no payload, or it does not decrypt: `reason`). */
  open(s: CallSignal): { ok: true; plaintext: Uint8Array } | { ok: false; reason: string };
}

export function secureCalls(secure: SecureClient): SecureCalls {
  return {
    seal(account, device, plaintext) {
      const addr = { u: account, d: device };
      if (!secure.e2e.hasSession(addr)) {
        throw new Error(`secureCalls.seal: no session with ${account} device ${device}; send ${account} a message first (it fetches the device's keys)`);
      }
      const out = secure.e2e.encrypt(addr, plaintext);
      secure.save(); // the ratchet stepped: on disk before the ciphertext leaves
      return out;
    },
    open(s) {
      if (!s.payload || s.fromDevice === undefined) return { ok: false, reason: "no_payload" };
      const r = secure.e2e.decrypt({ u: s.from, d: s.fromDevice }, s.payload);
      if (!r.ok) return { ok: false, reason: r.reason };
      secure.save();
      return { ok: true, plaintext: r.plaintext };
    },
  };
}

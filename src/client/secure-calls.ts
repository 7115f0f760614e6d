/**
 * End-to-end encrypted call payloads (the SDP and ICE candidates), with the
 * sessions a SecureClient holds: each payload is one Double Ratchet message
 * for one device, as a message is. A signal that is lost on the way (call
 * signals are never queued) is a skipped message key to the ratchet, which
 * the next one survives. `prepare(account)` sets up the sessions a call
 * needs (the ones messaging made, or new ones from the devices' key bundles).
 *
 * @example
 * const sc = secureCalls(secure);
 * await sc.prepare("bob");
 * const id = await callControl(client).call("bob", (d) => sc.seal("bob", d, sdpBytes));
 * client.on("call", async (s) => { const sdp = await sc.open(s); ... });
 */
import type { SecureClient } from "./secure.ts";
import type { CallSignal } from "./types.ts";

export interface SecureCalls {
  /** Sessions with every current device of `account` that has keys (fetches the bundles of those that lack one). */
  prepare(account: string): Promise<void>;
  /** The payload for one device, once the ratchet step is stored; rejects (with the fix) when there is no session with it. */
  seal(account: string, device: number, plaintext: Uint8Array): Promise<Uint8Array>;
  /** The plaintext of a received signal's payload, or why not (no payload, or it does not decrypt: `reason`). */
  open(s: CallSignal): Promise<{ ok: true; plaintext: Uint8Array } | { ok: false; reason: string }>;
}

export function secureCalls(secure: SecureClient): SecureCalls {
  return {
    prepare: (account) => secure.ensureSessions(account),
    async seal(account, device, plaintext) {
      const addr = { u: account, d: device };
      if (!secure.e2e.hasSession(addr)) {
        throw new Error(`secureCalls.seal: no session with ${account} device ${device}; await prepare(${JSON.stringify(account)}) first (a device that never published keys cannot be reached)`);
      }
      const out = await secure.e2e.encrypt(addr, plaintext);
      await secure.save(); // the ratchet stepped: stored before the ciphertext leaves
      return out;
    },
    async open(s) {
      if (!s.payload || s.fromDevice === undefined) return { ok: false, reason: "no_payload" };
      const r = await secure.e2e.decrypt({ u: s.from, d: s.fromDevice }, s.payload);
      if (!r.ok) return { ok: false, reason: r.reason };
      await secure.save();
      return { ok: true, plaintext: r.plaintext };
    },
  };
}

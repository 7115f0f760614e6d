/**
 * The payloads of one 1:1 send of SecureClient (one message id), kept for its
 * retransmissions. The client's payload callback is synchronous and the
 * crypto is not, so the payloads are encrypted first (seal), for the devices
 * of the cached lists, and the callback picks them (pick); a device the
 * callback asks for that seal did not cover (a refreshed list brought it, or
 * its keys changed meanwhile) gets a notice and a later round.
 */
import { encodeEnvelope } from "./crypto/index.ts";
import type { E2EDevice } from "./crypto/index.ts";
import type { SwitchboardClient } from "./client.ts";

export const devKey = (u: string, d: number) => `${u}\u0000${d}`;

export class Round {
  /** Encrypted before the transmission, by `account\0device\0kv`. */
  private sealed = new Map<string, Uint8Array>();
  /** What each device was given, for retransmissions: the same bytes, no second ratchet step. */
  private cache = new Map<string, Uint8Array>();
  /** `account\0device` of devices with keys that got a notice: they get the message in a later round. */
  readonly missed = new Set<string>();
  /** `account\0device\0kv` of devices given a ciphertext. */
  readonly encrypted = new Set<string>();

  constructor(private readonly c: SwitchboardClient, private readonly e2e: E2EDevice) {}

  /**
   * Encrypts `inner` for every device of the cached lists of `to` (and our other devices) that `want`s it and
   * has a session for its current keys. Resolves true when it encrypted any (the caller saves the state before
   * the transmission).
   */
  async seal(to: string, inner: Uint8Array, want: (account: string, d: number) => boolean): Promise<boolean> {
    const c = this.c;
    const jobs: Promise<void>[] = [];
    for (const account of to === c.account ? [to] : [to, c.account]) {
      for (const d of await c.devices(account)) {
        if ((account === c.account && d === c.device) || !want(account, d)) continue;
        const kv = c.keyVersion(account, d);
        const addr = { u: account, d };
        if (kv === 0 || !this.e2e.hasSession(addr) || this.e2e.knownIdentity(addr)?.kv !== kv) continue;
        const ck = `${devKey(account, d)}\u0000${kv}`;
        if (this.sealed.has(ck)) continue;
        jobs.push(this.e2e.encrypt(addr, inner).then((b) => void this.sealed.set(ck, b)));
      }
    }
    await Promise.all(jobs);
    return jobs.length > 0;
  }

  /** The payload for one device (the client's synchronous callback): what seal() made for its current keys, else a notice. */
  pick(account: string, d: number): Uint8Array {
    const kv = this.c.keyVersion(account, d);
    const ck = `${devKey(account, d)}\u0000${kv}`;
    const cached = this.cache.get(ck);
    if (cached) return cached; // a retransmission (reconnect, devices_mismatch)
    let bytes = kv === 0 ? undefined : this.sealed.get(ck);
    if (bytes) this.encrypted.add(ck);
    else if (kv === 0) bytes = encodeEnvelope({ t: 0, r: "no_keys" });
    else {
      bytes = encodeEnvelope({ t: 0, r: "no_session" });
      this.missed.add(devKey(account, d));
    }
    this.cache.set(ck, bytes);
    return bytes;
  }
}

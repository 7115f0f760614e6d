/**
 * Resumption tickets (docs/PROTOCOL.md §4.11): after a login the server hands the device a ticket and its secret;
 * the next login sends `resume` with an HMAC under that secret in the same write as its hello, instead of
 * waiting for the hello's nonce and signing it with Ed25519. That is one round trip and one Ed25519 verify
 * (the dearest step of a login) fewer; what the server does instead is two HMAC-SHA256 over < 150 bytes.
 *
 * - Stateless per ticket: the secret is HMAC(key, sid, account, device, the device's public key, ticket), so
 *   nothing is stored per ticket, a revoked device (no key) or another device's ticket cannot pass, and a
 *   forged ticket or proof fails the MAC.
 * - Keys: in accounts.db (AccountStore.ticketKeys), rotated every `auth.ticket_lifetime`; the current and the
 *   previous one are checked, so every unexpired ticket still verifies after a rotation and after a restart.
 *   Per node: in a cluster the account's home issues and checks its tickets; after a `cluster move` of its
 *   shard the new home refuses the old home's tickets and the device logs in once with Ed25519 there.
 * - Replay: a proof carries `ts`, the client's estimate of server time. It must be within ±SKEW_MS of the
 *   server's clock, later than the process started (a proof recorded before a crash or restart is older
 *   than that), and later than the device's last accepted one (in memory, kept at least as long as a proof
 *   stays within the window). So each proof is taken once, without a disk write per login.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { resumeTranscript, ticketSecretInput, TICKET_BYTES } from "../protocol/auth.ts";
import type { AccountStore, TicketKey } from "../store/accounts.ts";

/**
 * How far `ts` may be from the server's clock. Small, because the replay guard holds one entry per device
 * that resumed within 2 × this (about 100 B each: 20 000 resumes/s for 20 s is 40 MB at the worst), and the
 * client's estimate (server time from its last `ready`, advanced by its monotonic clock) drifts by its
 * oscillator only (50 ppm: 4 s a day). A proof outside it is refused and the client logs in with Ed25519.
 */
export const SKEW_MS = 10_000;

/** Why a ticket was refused (the text of `err ticket_refused`); `counts`: a failed login for the rate limits. */
export type TicketRefusal = { reason: string; counts: boolean };

export interface IssuedTicket {
  tk: Uint8Array;
  tks: Uint8Array;
  /** expiry, ms */
  tke: number;
}

export class Tickets {
  private keys: TicketKey[];
  /** Newest accepted `ts` per device, in two generations swapped every 2 × SKEW_MS (see seen()). */
  private recent = new Map<string, number>();
  private older = new Map<string, number>();
  private swapped: number;

  constructor(
    private store: AccountStore,
    private sid: string,
    /** ms; 0: no tickets */
    private lifetimeMs: number,
    /** Proofs made before this (ms) are refused: they may have been taken by a process before this one. */
    readonly startedAt = Date.now(),
  ) {
    this.keys = lifetimeMs > 0 ? store.ticketKeys(startedAt, lifetimeMs) : [];
    this.swapped = startedAt;
  }

  get enabled(): boolean {
    return this.lifetimeMs > 0;
  }

  issue(account: string, device: number, pk: Uint8Array, now: number): IssuedTicket {
    this.rotate(now);
    const key = this.keys[0]!;
    // The current key is at most one lifetime old and is deleted two rotations after it was made: a ticket
    // of one lifetime made with it expires before its key goes.
    const tke = now + this.lifetimeMs;
    const tk = new Uint8Array(TICKET_BYTES);
    const v = new DataView(tk.buffer);
    v.setUint32(0, key.id, false);
    v.setUint32(4, Math.floor(tke / 1000), false);
    crypto.getRandomValues(tk.subarray(8)); // in place: no Buffer per ticket (randomBytes)
    return { tk, tks: this.secret(key, account, device, pk, tk), tke: Math.floor(tke / 1000) * 1000 };
  }

  /**
   * The proof passes (and is used up): the ticket to hand back in the `ready`, `again` when the one presented is
   * still good for that (see below), else null (issue a fresh one). Otherwise why not. `pk`: the device's
   * active key, null if unknown or revoked.
   *
   * `again`: the presented ticket, when it was made with the current key and more than half its lifetime
   * remains. A ticket may be used many times (§4.11), so handing it back is what a fresh one would do for
   * the client, at no cost: a fresh one costs an HMAC, 8 random bytes and a key check per resumed login
   * (11 % of a bare reconnect's CPU in the storm profile, 2026-12-03). Made with the current key, it expires
   * before that key is dropped; with half its life left, the client still gets a fresh one at least every
   * half lifetime.
   */
  check(account: string, device: number, pk: Uint8Array | null, tk: Uint8Array, ts: number, mac: Uint8Array, now: number): { again: IssuedTicket | null } | TicketRefusal {
    if (!this.enabled) return { reason: "this server issues no tickets", counts: false };
    const v = new DataView(tk.buffer, tk.byteOffset, tk.byteLength);
    const key = this.keys.find((k) => k.id === v.getUint32(0, false));
    if (key === undefined) return { reason: "its key has been rotated out", counts: false };
    if (v.getUint32(4, false) * 1000 <= now) return { reason: "it has expired", counts: false };
    if (ts < now - SKEW_MS || ts > now + SKEW_MS) return { reason: `its ts is more than ${SKEW_MS} ms from the server's clock (${now})`, counts: false };
    if (ts <= this.startedAt) return { reason: "its ts is older than this server's start", counts: false };
    // Unknown and revoked devices look like a forged MAC: the answer does not tell which devices exist.
    if (pk === null) return { reason: "the proof does not verify", counts: true };
    const tks = this.secret(key, account, device, pk, tk);
    const want = createHmac("sha256", tks).update(resumeTranscript(this.sid, account, device, ts)).digest();
    if (!timingSafeEqual(want, mac)) return { reason: "the proof does not verify", counts: true };
    const id = `${account}\u0000${device}`;
    const last = this.recent.get(id) ?? this.older.get(id);
    if (last !== undefined && ts <= last) return { reason: "its ts is not later than the device's last resume (a replay)", counts: false };
    this.recent.set(id, ts);
    const tke = v.getUint32(4, false) * 1000;
    return { again: key === this.keys[0] && tke - now > this.lifetimeMs / 2 ? { tk, tks, tke } : null };
  }

  /**
   * Called from the sweep: rotates the key when due, and forgets accepted proofs once they are out of the
   * window. An entry made at t is kept for at least 2 × SKEW_MS (it survives one swap), and its proof's ts
   * is at most t + SKEW_MS, so the proof is out of the window (ts < now - SKEW_MS) before the entry goes.
   */
  sweep(now: number): void {
    if (!this.enabled) return;
    this.rotate(now);
    if (now - this.swapped >= 2 * SKEW_MS) {
      this.older = this.recent;
      this.recent = new Map();
      this.swapped = now;
    }
  }

  private rotate(now: number): void {
    if (now - this.keys[0]!.created >= this.lifetimeMs) this.keys = this.store.ticketKeys(now, this.lifetimeMs);
  }

  private secret(key: TicketKey, account: string, device: number, pk: Uint8Array, tk: Uint8Array): Uint8Array {
    return new Uint8Array(createHmac("sha256", key.key).update(ticketSecretInput(this.sid, account, device, pk, tk)).digest());
  }
}

/**
 * Resumption tickets (docs/PROTOCOL.md §4.11): after a login the server hands the device a ticket and its secret;
 * the next login sends `resume` with an HMAC under that secret in the same write as its hello, instead of
 * waiting for the hello's nonce and signing it with Ed25519. That is one round trip and one Ed25519 verify
 * (the dearest step of a login) fewer; what the server does instead is two HMAC-SHA256 over < 150 bytes.
 *
 * - Stateless per ticket: the secret is HMAC(key of the account's shard, sid, account, device, ticket), so nothing
 *   is stored per ticket, another device's ticket cannot pass, and a forged ticket or proof fails the MAC.
 * - No accounts.db read: the ticket carries when it was issued, and a ticket of a device revoked, or of an account
 *   deleted, at or after that is refused (Directory.loginChangedAt: the changes of one ticket lifetime, in memory,
 *   read at start). The device's key is not MACed in: a device's key never changes (a new key is a new device id,
 *   never reused within an account), and a name deleted stays reserved for a ticket lifetime at least, so that
 *   (account, device, issued after every revoke and deletion) names one key. Reading the key was ~12 % of a bare
 *   reconnect's CPU (BENCHMARKS.md '12:45 UTC reconnect').
 * - Keys: in accounts.db (AccountStore.ticketKeys), rotated every `auth.ticket_lifetime`; the current and the
 *   previous one are checked, so every unexpired ticket still verifies after a rotation and after a restart.
 *   A ticket's secret is made with the key derived for the account's home shard (HMAC(key, shard)), not the node
 *   key itself: in a cluster a `cluster move` of a shard ships the derived keys of that shard (and the node's
 *   sid) with its rows (the `shard:rows` hook, `shardRows`), so the new home verifies the tickets its devices
 *   hold, while what it learns forges nothing beyond the shard whose data it now has anyway.
 * - Replay: a proof carries `ts`, the client's estimate of server time. It must be within ±SKEW_MS of the
 *   server's clock, later than the process started (a proof recorded before a crash or restart is older
 *   than that), and later than the device's last accepted one (in memory, kept at least as long as a proof
 *   stays within the window). So each proof is taken once, without a disk write per login. The last accepted
 *   `ts` of a shard's devices moves with the shard, so a proof taken at the old home is refused at the new one.
 */
import { timingSafeEqual } from "node:crypto";
import { transcriptBound, writeResumeTranscript, writeTicketSecretInput, TICKET_BYTES } from "../protocol/auth.ts";
import { getU32, putU32 } from "../protocol/bytes.ts";
import type { AccountStore, MovedTicketKey, TicketKey } from "../store/accounts.ts";
import type { Directory } from "./directory.ts";
import type { ShardRows } from "./module.ts";
import { shardOf } from "./cluster/shards.ts";
import { HmacSha256 } from "./hmac.ts";
import { ByDevice } from "../store/by-device.ts";

const SHARD_KEY = new TextEncoder().encode("switchboard/1/ticket-shard");
/**
 * A shard's replay record of the devices that resumed recently: device → newest accepted ts. By (account, device),
 * not by a `${account}\u0000${device}` string: that was a string built, flattened and hashed per resume, and kept
 * per device for 20 s (src/store/by-device.ts). A shard move still ships the string form (its `seen` rows).
 */
type Seen = ByDevice<number>;
const NONE: MovedTicketKey[] = [];

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
  /** Newest accepted `ts` per device, by the account's shard, in two generations swapped every 2 × SKEW_MS (see sweep()). */
  private recent = new Map<number, Seen>();
  private older = new Map<number, Seen>();
  private swapped: number;
  /**
   * The node keys derived per shard, made when first used, by key id then shard (at most 2 × 4096 of 32 bytes).
   * Numbers, not a `<key id>:<shard>` string: building and hashing that string per resume was ~4 % of a bare
   * reconnect's samples (the storm profile, 2026-12-03 13:47 UTC).
   */
  private shardKeys = new Map<number, Map<number, Uint8Array>>();
  /** Other nodes' keys of shards moved here, by shard (AccountStore.movedTicketKeys). */
  private moved = new Map<number, MovedTicketKey[]>();
  /** The HMACs of issue and check, with their transcripts written in its kept buffer (src/core/hmac.ts). */
  private hmac = new HmacSha256();
  /** A ticket's secret while its proof is checked (the MAC's output array is reused by the next MAC). */
  private tks = new Uint8Array(32);

  constructor(
    private store: AccountStore,
    /** Revokes and deletions of the last ticket lifetime (Directory.watchLogins, called here). */
    private logins: Directory,
    private sid: string,
    /** ms; 0: no tickets */
    private lifetimeMs: number,
    /** Proofs made before this (ms) are refused: they may have been taken by a process before this one. */
    readonly startedAt = Date.now(),
  ) {
    this.keys = lifetimeMs > 0 ? store.ticketKeys(startedAt, lifetimeMs) : [];
    this.swapped = startedAt;
    if (lifetimeMs > 0) for (const k of store.movedTicketKeys()) if (k.expires > startedAt) this.movedOf(k.shard).push(k);
    if (lifetimeMs > 0) logins.watchLogins(this.oldest(startedAt));
  }

  get enabled(): boolean {
    return this.lifetimeMs > 0;
  }

  issue(account: string, device: number, now: number): IssuedTicket {
    this.rotate(now);
    const key = this.keys[0]!;
    // The current key is at most one lifetime old and is deleted two rotations after it was made: a ticket
    // of one lifetime made with it expires before its key goes.
    const tke = now + this.lifetimeMs;
    const tk = new Uint8Array(TICKET_BYTES);
    putU32(tk, 0, key.id);
    putU32(tk, 4, Math.floor(tke / 1000));
    putU32(tk, 8, Math.floor(now / 1000)); // issued: what a revoke after it refuses (check)
    crypto.getRandomValues(tk.subarray(12)); // in place: no Buffer per ticket (randomBytes)
    return { tk, tks: this.secret(this.shardKey(key, shardOf(account)), this.sid, account, device, tk).slice(), tke: Math.floor(tke / 1000) * 1000 };
  }

  /**
   * The proof passes (and is used up): the ticket to hand back in the `ready`, `again` when the one presented is
   * still good for that (see below), else null (issue a fresh one). Otherwise why not. `pk`: the device's
   * active key, null if unknown or revoked.
   *
   * `again`: the presented ticket, when it was made with the current key and more than half its lifetime
   * remains. A ticket may be used many times (§4.11), so handing it back is what a fresh one would do for
   * the client, at no cost: a fresh one costs an HMAC, 4 random bytes and a key check per resumed login
   * (11 % of a bare reconnect's CPU in the storm profile, 2026-12-03). Made with the current key, it expires
   * before that key is dropped; with half its life left, the client still gets a fresh one at least every
   * half lifetime.
   */
  check(account: string, device: number, tk: Uint8Array, ts: number, mac: Uint8Array, now: number): { again: IssuedTicket | null } | TicketRefusal {
    if (!this.enabled) return { reason: "this server issues no tickets", counts: false };
    const kid = getU32(tk, 0);
    const shard = shardOf(account);
    const key = this.keys.find((k) => k.id === kid);
    // The keys a ticket with this id may be of: this node's, and those of nodes the shard moved here from (ids of
    // different nodes may collide: each is tried, at most one HMAC pair more).
    const moved = this.moved.get(shard)?.filter((k) => k.id === kid && k.expires > now) ?? NONE;
    if (key === undefined && moved.length === 0) return { reason: "its key has been rotated out", counts: false };
    if (getU32(tk, 4) * 1000 <= now) return { reason: "it has expired", counts: false };
    if (ts < now - SKEW_MS || ts > now + SKEW_MS) return { reason: `its ts is more than ${SKEW_MS} ms from the server's clock (${now})`, counts: false };
    if (ts <= this.startedAt) return { reason: "its ts is older than this server's start", counts: false };
    // Issued before the revokes and deletions kept (a moved key's, under a longer lifetime than this node's).
    const issued = getU32(tk, 8) * 1000;
    if (issued < this.oldest(now)) return { reason: "it was issued longer ago than the ticket lifetime", counts: false };
    // This node's key first (no allocation on that path: a resume is the hot login), then the moved ones.
    let tks = key === undefined ? null : this.proves(this.shardKey(key, shard), this.sid, account, device, tk, ts, mac);
    const own = tks !== null;
    for (let i = 0; tks === null && i < moved.length; i++) tks = this.proves(moved[i]!.key, moved[i]!.sid, account, device, tk, ts, mac);
    // An unknown device's ticket cannot verify (only the server MACs one): it looks like a forged MAC.
    if (tks === null) return { reason: "the proof does not verify", counts: true };
    // After the MAC: a holder of a revoked device's secret learns only what it knew (that device existed). `issued`
    // is floored to the second, so a change in the second of the issue refuses it too.
    if (this.logins.loginChangedAt(account, device) >= issued) return { reason: "the device was revoked or its account deleted since the ticket was issued", counts: false };
    const last = this.recent.get(shard)?.get(account, device) ?? this.older.get(shard)?.get(account, device);
    if (last !== undefined && ts <= last) return { reason: "its ts is not later than the device's last resume (a replay)", counts: false };
    this.seenOf(this.recent, shard).set(account, device, ts);
    const tke = getU32(tk, 4) * 1000;
    return { again: own && key === this.keys[0] && tke - now > this.lifetimeMs / 2 ? { tk, tks: tks.slice(), tke } : null };
  }

  /**
   * A shard move (cluster/chunks.ts through the `shard:rows` hook, under `core.tickets`): export ships this node's
   * keys derived for the shard (current and previous, with this node's sid and when their tickets are all expired),
   * the keys other nodes' moves brought for it, and the replay record of its devices; import keeps them (durably:
   * tickets live for days) beside this node's own; drop, at the old home after the flip, forgets what it had.
   */
  shardRows(o: ShardRows): void {
    if (!this.enabled || o.accounts.length === 0) return;
    const shard = shardOf(o.accounts[0]!);
    const now = Date.now();
    if (o.op === "export") {
      const seen: { id: string; ts: number }[] = [];
      for (const gen of [this.older.get(shard), this.recent.get(shard)]) {
        if (gen !== undefined) for (const a of o.accounts) for (const [d, ts] of gen.devices(a) ?? []) seen.push({ id: `${a}\u0000${d}`, ts });
      }
      const first = (o.page ?? 0) === 0;
      const keys = !first ? [] : [...this.keys.map((k) => ({ shard, sid: this.sid, id: k.id, key: this.shardKey(k, shard), expires: k.created + 2 * this.lifetimeMs })), ...(this.moved.get(shard) ?? [])].filter((k) => k.expires > now);
      if (seen.length > 0 || keys.length > 0) o.out["core.tickets"] = { keys, seen };
      return;
    }
    if (o.op === "drop") {
      this.moved.delete(shard);
      this.recent.delete(shard);
      this.older.delete(shard);
      return this.persist();
    }
    // A chunk may carry part of either table, or none (the rows of one shipment are cut over several imports).
    const rows = o.rows["core.tickets"] as { keys?: MovedTicketKey[]; seen?: { id: string; ts: number }[] } | undefined;
    if (rows === undefined) return;
    const list = this.movedOf(shard);
    for (const k of rows.keys ?? []) if (k.sid !== this.sid && !list.some((m) => m.sid === k.sid && m.id === k.id)) list.push({ shard, sid: k.sid, id: k.id, key: new Uint8Array(k.key), expires: k.expires });
    const seen = this.seenOf(this.recent, shard);
    for (const { id, ts } of rows.seen ?? []) {
      const z = id.indexOf("\u0000");
      const a = id.slice(0, z);
      const d = Number(id.slice(z + 1));
      if (ts > (seen.get(a, d) ?? this.older.get(shard)?.get(a, d) ?? 0)) seen.set(a, d, ts);
    }
    if ((rows.keys ?? []).length > 0) this.persist();
  }

  /**
   * Called from the sweep: rotates the key when due, and forgets accepted proofs once they are out of the
   * window. An entry made at t is kept for at least 2 × SKEW_MS (it survives one swap), and its proof's ts
   * is at most t + SKEW_MS, so the proof is out of the window (ts < now - SKEW_MS) before the entry goes.
   */
  sweep(now: number): void {
    if (!this.enabled) return;
    this.rotate(now);
    this.logins.pruneLogins(this.oldest(now));
    if (now - this.swapped >= 2 * SKEW_MS) {
      this.older = this.recent;
      this.recent = new Map();
      this.swapped = now;
    }
  }

  private rotate(now: number): void {
    if (now - this.keys[0]!.created < this.lifetimeMs) return;
    this.keys = this.store.ticketKeys(now, this.lifetimeMs);
    this.shardKeys.clear();
    let dropped = false;
    for (const [s, ks] of this.moved) {
      const live = ks.filter((k) => k.expires > now);
      if (live.length < ks.length) (dropped = true), live.length ? this.moved.set(s, live) : this.moved.delete(s);
    }
    if (dropped) this.persist();
  }

  /**
   * The oldest issue time of a ticket taken here: one lifetime ago, or the previous key's creation when older (a
   * ticket of this node is issued after its key was made: so a lifetime shortened by a restart refuses none
   * of them). The revokes and deletions since then are kept (Directory.watchLogins).
   */
  private oldest(now: number): number {
    // To the second: a ticket's issue time is floored to one (a key made and a ticket issued in the same second).
    return Math.min(now - this.lifetimeMs, Math.floor(this.keys[this.keys.length - 1]!.created / 1000) * 1000);
  }

  /** The node key `key` derived for one shard: what a move of that shard may hand to another node. */
  private shardKey(key: TicketKey, shard: number): Uint8Array {
    let of = this.shardKeys.get(key.id);
    if (of === undefined) this.shardKeys.set(key.id, (of = new Map()));
    let k = of.get(shard);
    if (k === undefined) {
      const m = this.hmac.room(SHARD_KEY.length + 4);
      m.set(SHARD_KEY);
      putU32(m, SHARD_KEY.length, shard);
      this.hmac.key(key.key);
      of.set(shard, (k = this.hmac.mac(SHARD_KEY.length + 4).slice()));
    }
    return k;
  }

  /** The ticket's secret under `key` and `sid` if the proof verifies with it (a kept array: copy it to keep it), else null. */
  private proves(key: Uint8Array, sid: string, account: string, device: number, tk: Uint8Array, ts: number, mac: Uint8Array): Uint8Array | null {
    if (mac.length !== 32) return null;
    const tks = this.tks;
    tks.set(this.secret(key, sid, account, device, tk));
    this.hmac.key(tks);
    const want = this.hmac.mac(writeResumeTranscript(this.hmac.message, 0, sid, account, device, ts));
    // Constant time (no early exit for a timing probe to measure); the length is checked above, as it must be.
    // 13-15 ns per call against 29-43 for the hand-written loop it replaces (micro-bench, 2 M calls, Bun 1.4.5).
    return timingSafeEqual(want, mac) ? tks : null;
  }

  /** HMAC(key, ticketSecretInput): the MAC's kept output array, overwritten by the next MAC. */
  private secret(key: Uint8Array, sid: string, account: string, device: number, tk: Uint8Array): Uint8Array {
    const m = this.hmac.room(transcriptBound(sid, account));
    this.hmac.key(key);
    return this.hmac.mac(writeTicketSecretInput(m, 0, sid, account, device, tk));
  }

  private movedOf(shard: number): MovedTicketKey[] {
    let l = this.moved.get(shard);
    if (l === undefined) this.moved.set(shard, (l = []));
    return l;
  }

  private seenOf(gen: Map<number, Seen>, shard: number): Seen {
    let m = gen.get(shard);
    if (m === undefined) gen.set(shard, (m = new ByDevice()));
    return m;
  }

  private persist(): void {
    this.store.putMovedTicketKeys([...this.moved.values()].flat());
  }
}

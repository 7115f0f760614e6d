/**
 * The in-memory view of accounts and their active devices, in front of the
 * AccountStore. Device lists are read on every send (to check that the
 * sender addressed exactly the current devices), so they are cached; every
 * change goes through this class, which keeps the cache true.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import type { AccountStore, LoginChanges } from "../store/accounts.ts";
import { fail, ok, ErrorCode, type Result } from "../protocol/errors.ts";
import { factsChanged } from "./facts.ts";

/** DER prefix that turns a raw 32-byte Ed25519 key into SubjectPublicKeyInfo. */
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  return createPublicKey(ed25519Spki(raw));
}

/** A raw Ed25519 public key as `verify()` takes it without a KeyObject: SPKI DER. */
export interface Ed25519Spki {
  key: Buffer;
  format: "der";
  type: "spki";
}

/**
 * For a key used once (a login's proof): a KeyObject's native key is freed only when the GC collects its
 * wrapper, so a login storm piled them up, and the RSS they took stayed after the storm (`loadtest idle
 * --conns 15000`, 3 interleaved runs: median 2 552 B per idle connection with a KeyObject per login,
 * 2 036 B with this; the same CPU per verify, 86-108 µs either way in isolation).
 */
export function ed25519Spki(raw: Uint8Array): Ed25519Spki {
  return { key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der", type: "spki" };
}

export interface ActiveDevice {
  device: number;
  name: string;
  created: number;
  /** Key version (0: no end-to-end keys published yet). */
  kv: number;
}

export interface DirectoryEntry {
  /** Active devices, ascending ids. */
  devices: ActiveDevice[];
  ids: number[];
}

export class Directory {
  private cache = new Map<string, DirectoryEntry>();
  /**
   * What a resume checks instead of reading accounts.db (watchLogins; Tickets.check): the accounts disabled now,
   * and when (ms) a device (`account 0x00 device`) was revoked or an account (`account`) deleted, for those since
   * `loginSince` (about a ticket lifetime ago: Tickets refuses a ticket issued before it). A few entries
   * (operator actions and revokes), not one per device: the accounts.db read a resume did instead was ~12 % of a
   * bare reconnect's CPU (BENCHMARKS.md '12:45 UTC reconnect').
   */
  private disabledNow = new Set<string>();
  private changes = new Map<string, number>();
  /** null: not watched (no tickets). */
  private loginSince: number | null = null;

  constructor(readonly store: AccountStore, private maxDevices: number) {}

  /**
   * Cluster mode (src/core/cluster/forward.ts): the entry of an account homed on another node, as its home last
   * answered (null: none known), or undefined for an account homed here. Null on a single node.
   */
  remote: ((account: string) => DirectoryEntry | null | undefined) | null = null;
  /** Cluster mode: told of every change to an account's devices here, so that peers drop what they cached. */
  changed: ((account: string) => void) | null = null;
  /** Cluster mode: a wait until every named account homed on another node has a fresh answer of its home here, or null. */
  fetch: ((accounts: Iterable<string>) => Promise<void> | null) | null = null;

  /**
   * Null when the devices of every named account can be read now (always on a single node); else a wait until
   * they can (the homes of remote ones answered). A group's fan-out waits for it: a remote member whose list
   * were only being asked for would get no copy.
   */
  ready(accounts: Iterable<string>): Promise<void> | null {
    return this.fetch === null ? null : this.fetch(accounts);
  }

  private load(account: string): DirectoryEntry | null {
    let e = this.cache.get(account);
    if (e) return e;
    if (this.remote !== null) {
      const r = this.remote(account);
      if (r !== undefined) return r;
    }
    if (!this.store.accountExists(account)) return null; // not cached: `user add` may create it any time
    const devices = this.store
      .devices(account)
      .filter((d) => d.revoked === null)
      .map((d) => ({ device: d.device, name: d.name, created: d.created, kv: d.kv }));
    e = { devices, ids: devices.map((d) => d.device) };
    this.cache.set(account, e);
    return e;
  }

  exists(account: string): boolean {
    return this.load(account) !== null;
  }

  /** Active device ids, ascending; null when the account does not exist. */
  deviceIds(account: string): readonly number[] | null {
    return this.load(account)?.ids ?? null;
  }

  devices(account: string): readonly ActiveDevice[] | null {
    return this.load(account)?.devices ?? null;
  }

  /** An active device's key version; undefined when the device is not active. */
  keyVersion(account: string, device: number): number | undefined {
    const ds = this.load(account)?.devices;
    if (ds === undefined) return undefined;
    for (let i = 0; i < ds.length; i++) if (ds[i]!.device === device) return ds[i]!.kv;
    return undefined;
  }

  /** Records that a device published new end-to-end keys (called by the keys module). */
  setKeyVersion(account: string, device: number, kv: number): boolean {
    const changed = this.store.setKeyVersion(account, device, kv);
    this.drop(account);
    return changed;
  }

  /**
   * An `auth`'s one read (a resume reads nothing: disabledLogin, loginChangedAt): the raw public key of an active device, or null (unknown or revoked), and
   * whether the account is disabled. From the store, not the cache: a login needs it once, caching it per device
   * would cost every idle connection its size, and so a revoke or a disable takes effect at the next login with
   * nothing to invalidate.
   */
  loginKey(account: string, device: number): { pk: Uint8Array | null; disabled: boolean } {
    return this.store.loginKey(account, device);
  }

  /**
   * Keeps the login state above from now on: the changes since `since` (ms) read from the store (so it is right
   * after a restart), then kept by the changes made through this class (revoke; forget, after the admin's disable,
   * enable and delete, and reloadLogins, after a shard move's rows, read the account's again).
   */
  watchLogins(since: number): void {
    this.loginSince = since;
    this.disabledNow.clear();
    this.changes.clear();
    this.noteLogins(this.store.loginChanges(since));
  }

  /** Whether the account is disabled, from memory (watchLogins). */
  disabledLogin(account: string): boolean {
    return this.disabledNow.has(account);
  }

  /** The latest (ms) revoke of this device or deletion of its account within the window, or -1. */
  loginChangedAt(account: string, device: number): number {
    if (this.changes.size === 0) return -1; // the usual case: no string built
    return Math.max(this.changes.get(`${account}\u0000${device}`) ?? -1, this.changes.get(account) ?? -1);
  }

  /** Forgets the changes before `since` (from the sweep: no ticket issued before it is taken any more). */
  pruneLogins(since: number): void {
    if (this.loginSince === null) return;
    this.loginSince = Math.max(this.loginSince, since);
    for (const [k, at] of this.changes) if (at < this.loginSince) this.changes.delete(k);
  }

  private noteLogins(c: LoginChanges): void {
    for (const a of c.disabled) this.disabledNow.add(a);
    for (const r of c.revoked) this.note(`${r.account}\u0000${r.device}`, r.at);
    for (const r of c.deleted) this.note(r.account, r.at);
  }

  private note(key: string, at: number): void {
    if (at > (this.changes.get(key) ?? -1)) this.changes.set(key, at);
  }

  /** The login state of one account read again from the store (its rows changed behind this class: forget, a shard move's import). */
  reloadLogins(account: string): void {
    if (this.loginSince === null) return;
    this.disabledNow.delete(account);
    this.noteLogins(this.store.loginChanges(this.loginSince, account));
  }

  enroll(account: string, code: string, pk: Uint8Array, name: string): Result<{ device: number }> {
    const r = this.store.enroll(account, code, pk, name, this.maxDevices);
    this.drop(account);
    return r;
  }

  addDevice(account: string, pk: Uint8Array, name: string): Result<{ device: number }> {
    const r = this.store.addDevice(account, pk, name, this.maxDevices);
    this.drop(account);
    return r;
  }

  /** Drops what is cached of an account (it was deleted, or its state changed behind this cache). */
  forget(account: string): void {
    this.drop(account);
    this.reloadLogins(account);
  }

  private drop(account: string): void {
    this.cache.delete(account);
    factsChanged(); // connections keep device lists resolved from this cache (src/core/facts.ts)
    if (this.changed !== null) this.changed(account);
  }

  revoke(account: string, device: number): Result<{ revoked: number }> {
    if (!this.deviceIds(account)?.includes(device)) return fail(ErrorCode.UNKNOWN_DEVICE, `account ${account} has no active device ${device}`);
    const r = this.store.revokeDevice(account, device);
    if (r.ok) this.note(`${account}\u0000${device}`, r.value.revoked);
    this.drop(account);
    return r.ok ? ok(r.value) : r;
  }
}

/**
 * The in-memory view of accounts and their active devices, in front of the
 * AccountStore. Device lists are read on every send (to check that the
 * sender addressed exactly the current devices), so they are cached; every
 * change goes through this class, which keeps the cache true.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import type { AccountStore } from "../store/accounts.ts";
import { fail, ok, ErrorCode, type Result } from "../protocol/errors.ts";

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
   * A login's one read (auth, resume): the raw public key of an active device, or null (unknown or revoked), and
   * whether the account is disabled. From the store, not the cache: a login needs it once, caching it per device
   * would cost every idle connection its size, and so a revoke or a disable takes effect at the next login with
   * nothing to invalidate.
   */
  loginKey(account: string, device: number): { pk: Uint8Array | null; disabled: boolean } {
    return this.store.loginKey(account, device);
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
  }

  private drop(account: string): void {
    this.cache.delete(account);
    if (this.changed !== null) this.changed(account);
  }

  revoke(account: string, device: number): Result<{ revoked: number }> {
    if (!this.deviceIds(account)?.includes(device)) return fail(ErrorCode.UNKNOWN_DEVICE, `account ${account} has no active device ${device}`);
    const r = this.store.revokeDevice(account, device);
    this.drop(account);
    return r.ok ? ok(r.value) : r;
  }
}

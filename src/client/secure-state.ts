/**
 * SecureClient's state file: this device's end-to-end state (identity,
 * prekeys, sessions, sender keys), which devices hold our sender key per
 * group, and the device lists last seen. One msgpack map, mode 0600,
 * replaced atomically (a temporary file, fsynced, renamed over the old one:
 * a crash leaves the old state or the new one, never half of one).
 */
import { existsSync, readFileSync } from "node:fs";
import { E2EDevice, pack, unpack, type Address } from "./crypto/index.ts";
import { writeFileAtomic } from "./storage-file.ts";

const FILE_VERSION = 1;

export interface SecureState {
  e2e: E2EDevice;
  /** Devices that hold our current sender key, by group: `account\0device\0kv`. */
  distributed: Map<string, Set<string>>;
  /** The device list last seen of each account we encrypt to (our own device excluded). */
  knownDevices: Map<string, number[]>;
}

/** The state in `path`, checked to belong to `me`; null when there is no file yet. Throws, with the fix, on a file it cannot use. */
export function readState(path: string, me: Address): SecureState | null {
  if (!existsSync(path)) return null;
  const v = unpack(readFileSync(path)) as { v?: number; e2e?: Uint8Array; dist?: [string, string[]][]; devs?: [string, number[]][] } | undefined;
  if (!v || v.v !== FILE_VERSION || !(v.e2e instanceof Uint8Array)) throw new Error(`${path} is not an end-to-end state file of version ${FILE_VERSION}; move it away to start over (peers will see a new security code)`);
  const e2e = E2EDevice.deserialize(v.e2e);
  if (e2e.address.u !== me.u || e2e.address.d !== me.d) {
    throw new Error(`${path} belongs to ${e2e.address.u} device ${e2e.address.d}, not ${me.u} device ${me.d}; give each device its own state file`);
  }
  const distributed = new Map<string, Set<string>>();
  for (const [g, ks] of v.dist ?? []) distributed.set(g, new Set(ks));
  const knownDevices = new Map<string, number[]>();
  for (const [a, ds] of v.devs ?? []) knownDevices.set(a, ds);
  return { e2e, distributed, knownDevices };
}

/** Writes the state file now (see above); `fsync` false only for tests and benchmarks. */
export function writeState(path: string, st: SecureState, fsync: boolean): void {
  // `devs` is optional in version 1: a file without it sees every account anew (no change reported the first time).
  const data = pack({ v: FILE_VERSION, e2e: st.e2e.serialize(), dist: [...st.distributed].map(([g, s]) => [g, [...s]]), devs: [...st.knownDevices] });
  writeFileAtomic(path, data, fsync);
}

/** The conventional state file of a device key file. */
export function statePathFor(keyFile: string): string {
  return `${keyFile}.e2e`;
}

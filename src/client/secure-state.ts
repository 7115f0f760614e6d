/**
 * SecureClient's state: this device's end-to-end state (identity, prekeys,
 * sessions, sender keys), which devices hold our sender key per group, and
 * the device lists last seen. One msgpack map in one StateStorage record
 * (storage.ts: a file in Bun and Node, IndexedDB in a browser), or in one
 * file (`statePath`, mode 0600). Either way replaced atomically: a crash
 * leaves the old state or the new one, never half of one.
 *
 * Saves are serialised and coalesced (StateSaver): a save() resolves once a
 * snapshot taken at or after the call is stored, so a caller that awaits it
 * knows its change is durable (SecureClient: before the ciphertext leaves, or
 * before the delivery is acknowledged).
 */
import { fileSlot } from "#state-file";
import { E2EDevice, pack, unpack, type Address, type AsyncCryptoProvider } from "./crypto/index.ts";
import type { StateStorage } from "./storage.ts";

const FILE_VERSION = 1;

export interface SecureState {
  e2e: E2EDevice;
  /** Devices that hold our current sender key, by group: `account\0device\0kv`. */
  distributed: Map<string, Set<string>>;
  /** The device list last seen of each account we encrypt to (our own device excluded). */
  knownDevices: Map<string, number[]>;
}

/** Where one state lives: a StateStorage record, or a file (storage-file.ts). */
export interface StateSlot {
  readonly name: string;
  load(): Promise<Uint8Array | null>;
  save(bytes: Uint8Array): Promise<void>;
}

export function storageSlot(storage: StateStorage, key: string): StateSlot {
  return { name: `${storage.name}/${key}`, load: () => storage.load(key), save: (b) => storage.save(key, b) };
}

/** The slot SecureOptions name: `storage` with `stateKey`, or the file `statePath`. Throws with the fix for neither. */
export function slotOf(o: { statePath?: string; storage?: StateStorage; stateKey?: string; fsync?: boolean }): StateSlot {
  if (o.storage) {
    if (!o.stateKey) throw new TypeError("SecureOptions: with `storage`, give `stateKey` too (e.g. \"alice.key.e2e\"): the record the state is kept under");
    return storageSlot(o.storage, o.stateKey);
  }
  if (!o.statePath) throw new TypeError("SecureOptions: give `statePath` (a file, e.g. \"alice.key.e2e\") or `storage` and `stateKey` (e.g. indexedDbStorage() in a browser)");
  return fileSlot(o.statePath, o.fsync !== false);
}

/** The state in `slot`, checked to belong to `me`; null when there is none yet. Throws, with the fix, on a state it cannot use. */
export async function readState(slot: StateSlot, me: Address, crypto?: AsyncCryptoProvider): Promise<SecureState | null> {
  const bytes = await slot.load();
  if (bytes === null) return null;
  const v = unpack(bytes) as { v?: number; e2e?: Uint8Array; dist?: [string, string[]][]; devs?: [string, number[]][] } | undefined;
  if (!v || v.v !== FILE_VERSION || !(v.e2e instanceof Uint8Array)) throw new Error(`${slot.name} is not an end-to-end state of version ${FILE_VERSION}; move it away to start over (peers will see a new security code)`);
  const e2e = await E2EDevice.deserialize(v.e2e, crypto);
  if (e2e.address.u !== me.u || e2e.address.d !== me.d) {
    throw new Error(`${slot.name} belongs to ${e2e.address.u} device ${e2e.address.d}, not ${me.u} device ${me.d}; give each device its own state file`);
  }
  const distributed = new Map<string, Set<string>>();
  for (const [g, ks] of v.dist ?? []) distributed.set(g, new Set(ks));
  const knownDevices = new Map<string, number[]>();
  for (const [a, ds] of v.devs ?? []) knownDevices.set(a, ds);
  return { e2e, distributed, knownDevices };
}

/** The bytes of a state (what readState reads back). */
export function encodeState(st: SecureState): Uint8Array {
  // `devs` is optional in version 1: a state without it sees every account anew (no change reported the first time).
  return pack({ v: FILE_VERSION, e2e: st.e2e.serialize(), dist: [...st.distributed].map(([g, s]) => [g, [...s]]), devs: [...st.knownDevices] });
}

/** Serialised, coalesced saves of one state (see above). */
export class StateSaver {
  /** The save not started yet: callers until it starts share it (its snapshot is taken when it starts). */
  private queued: Promise<void> | null = null;
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly slot: StateSlot, private readonly snapshot: () => Uint8Array) {}

  save(): Promise<void> {
    if (this.queued) return this.queued;
    const p = this.tail.then(
      () => this.write(),
      () => this.write(),
    );
    this.queued = p;
    this.tail = p;
    return p;
  }

  private write(): Promise<void> {
    this.queued = null;
    return this.slot.save(this.snapshot());
  }
}

/** The conventional state file of a device key file. */
export function statePathFor(keyFile: string): string {
  return `${keyFile}.e2e`;
}

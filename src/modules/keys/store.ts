/**
 * The end-to-end key directory: per device, an identity (Ed25519 `ik`, X25519
 * `dh` and the signature `dhs` binding them), the current signed prekey and a
 * stock of one-time prekeys that senders consume, one per fetch.
 *
 * The store keeps keys and enforces what only it can see (which one-time
 * prekey ids are already stored, how many there are, which ones went to whom);
 * signatures are checked by the keys module before anything reaches it. Every
 * method is one SQLite transaction, so two fetches can never take the same
 * one-time prekey and a crash never leaves half a publish behind.
 *
 * The keys module's own store, on keys.db from ctx.database (the same file
 * 3337863 wrote, so existing data directories keep their keys).
 */
import type { Database, Statement } from "bun:sqlite";
import { ErrorCode, fail, ok, type Result } from "../../protocol/errors.ts";

export interface SignedPrekey {
  id: number;
  /** X25519 public key, 32 bytes. */
  k: Uint8Array;
  /** Ed25519 signature by the identity key over `k`, 64 bytes. */
  s: Uint8Array;
}

export interface OneTimePrekey {
  id: number;
  /** X25519 public key, 32 bytes. */
  k: Uint8Array;
}

export interface DeviceKeys {
  /** Ed25519 identity (signing) key, 32 bytes. */
  ik: Uint8Array;
  /** X25519 identity (DH) key, 32 bytes. */
  dh: Uint8Array;
  /** Ed25519 signature by `ik` over `dh`, 64 bytes. */
  dhs: Uint8Array;
  /** Key version: derived from (ik, dh) by the caller; stored so fetches need not recompute it. */
  kv: number;
  spk: SignedPrekey;
}

/** What a sender gets for one device: its keys, plus one one-time prekey while any are left. */
export interface Bundle extends DeviceKeys {
  device: number;
  otk?: OneTimePrekey;
}

export interface PrekeyLimits {
  /** One-time prekeys a device may have stored at most. */
  maxOtk: number;
  /** Below this many, a fetch reports the device as low (once per crossing). */
  lowOtk: number;
}

export interface TakeResult {
  /** One per requested device that has published keys, in the order requested. */
  bundles: Bundle[];
  /**
   * Devices this fetch left with fewer than `lowOtk` one-time prekeys and that
   * had not been reported since their stock was last at or above it; `n` is
   * what they have left.
   */
  low: { device: number; n: number }[];
}

export interface KeyStore {
  /** A device's identity and current signed prekey; null before its first publish. */
  get(account: string, device: number): DeviceKeys | null;
  /**
   * Sets a device's identity and signed prekey and adds one-time prekeys. When
   * (ik, dh) differ from the stored identity, the old signed prekey and every
   * old one-time prekey are dropped first: they belong to keys the device no
   * longer has. All or nothing: a refused publish changes nothing.
   * `changed` says whether the identity is new; `n` is the stock afterwards.
   */
  publish(account: string, device: number, keys: DeviceKeys, otks: readonly OneTimePrekey[], limits: PrekeyLimits): Result<{ changed: boolean; n: number; added: number }>;
  /** Replaces the signed prekey (rotation). `not_found` before the first publish. */
  rotate(account: string, device: number, spk: SignedPrekey): Result<{ n: number }>;
  /**
   * Adds one-time prekeys. An id already stored with the same key is skipped
   * (a resend after a lost answer is harmless); an id stored with another key,
   * or given twice, is `bad_field`; a batch that would take the stock above
   * `maxOtk` is `too_many_keys`. Either case stores nothing.
   */
  addPrekeys(account: string, device: number, otks: readonly OneTimePrekey[], limits: PrekeyLimits): Result<{ n: number; added: number }>;
  /** One-time prekeys a device has left (0 before its first publish). */
  count(account: string, device: number): number;
  /**
   * The bundles of `devices` of one account, taking (deleting) one one-time
   * prekey per device, lowest id first, in one transaction. Devices that
   * never published are left out.
   */
  take(account: string, devices: readonly number[], lowOtk: number): TakeResult;
  /** Deletes everything of a device (it was revoked); false when it had nothing. */
  drop(account: string, device: number): boolean;
  /** Deletes everything of every device of an account (it was deleted); returns how many devices had keys. */
  dropAccount(account: string): number;
  close(): void;
}

interface IdentityRow {
  ik: Uint8Array;
  dh: Uint8Array;
  dhs: Uint8Array;
  kv: number;
  spk_id: number;
  spk: Uint8Array;
  spk_sig: Uint8Array;
  low: number;
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);

/**
 * keys.db's schema steps, applied by core (ctx.database): 1 = 3337863.
 * WITHOUT ROWID: rows are looked up and deleted by their key only, and a
 * device's one-time prekeys sit together in id order (the next one to hand
 * out is the first row of its range).
 */
export const KEYS_SCHEMA = [
  `
      CREATE TABLE IF NOT EXISTS identities (
        account TEXT NOT NULL, device INTEGER NOT NULL,
        ik BLOB NOT NULL, dh BLOB NOT NULL, dhs BLOB NOT NULL, kv INTEGER NOT NULL,
        spk_id INTEGER NOT NULL, spk BLOB NOT NULL, spk_sig BLOB NOT NULL,
        low INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL,
        PRIMARY KEY (account, device)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS otks (
        account TEXT NOT NULL, device INTEGER NOT NULL, id INTEGER NOT NULL, k BLOB NOT NULL,
        PRIMARY KEY (account, device, id)) WITHOUT ROWID;
    `,
];

export class SqliteKeyStore implements KeyStore {
  private q: Record<string, Statement>;

  /** `db`: keys.db, already at KEYS_SCHEMA's version (ctx.database, or openVersioned in a test). */
  constructor(readonly db: Database) {
    const p = (sql: string) => this.db.prepare(sql);
    this.q = {
      get: p("SELECT ik, dh, dhs, kv, spk_id, spk, spk_sig, low FROM identities WHERE account = ? AND device = ?"),
      upsert: p(
        `INSERT INTO identities (account, device, ik, dh, dhs, kv, spk_id, spk, spk_sig, low, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
         ON CONFLICT (account, device) DO UPDATE SET ik = excluded.ik, dh = excluded.dh, dhs = excluded.dhs, kv = excluded.kv,
           spk_id = excluded.spk_id, spk = excluded.spk, spk_sig = excluded.spk_sig, updated = excluded.updated`,
      ),
      resetLow: p("UPDATE identities SET low = 0 WHERE account = ? AND device = ?"),
      setLow: p("UPDATE identities SET low = 1 WHERE account = ? AND device = ?"),
      rotate: p("UPDATE identities SET spk_id = ?, spk = ?, spk_sig = ?, updated = ? WHERE account = ? AND device = ?"),
      count: p("SELECT COUNT(*) AS n FROM otks WHERE account = ? AND device = ?"),
      otk: p("SELECT k FROM otks WHERE account = ? AND device = ? AND id = ?"),
      insertOtk: p("INSERT INTO otks (account, device, id, k) VALUES (?, ?, ?, ?)"),
      takeOtk: p(
        "DELETE FROM otks WHERE account = ?1 AND device = ?2 AND id = (SELECT id FROM otks WHERE account = ?1 AND device = ?2 ORDER BY id LIMIT 1) RETURNING id, k",
      ),
      dropOtks: p("DELETE FROM otks WHERE account = ? AND device = ?"),
      dropIdentity: p("DELETE FROM identities WHERE account = ? AND device = ?"),
      dropAccountOtks: p("DELETE FROM otks WHERE account = ?"),
      dropAccountIdentities: p("DELETE FROM identities WHERE account = ?"),
    };
  }

  private row(account: string, device: number): IdentityRow | null {
    return this.q.get!.get(account, device) as IdentityRow | null;
  }

  private countOf(account: string, device: number): number {
    return (this.q.count!.get(account, device) as { n: number }).n;
  }

  get(account: string, device: number): DeviceKeys | null {
    const r = this.row(account, device);
    return r === null ? null : toKeys(r);
  }

  /** Checks a batch against what is stored and inserts the new entries; the caller holds the transaction. */
  private insertPrekeys(account: string, device: number, otks: readonly OneTimePrekey[], limits: PrekeyLimits): Result<{ n: number; added: number }> {
    const seen = new Set<number>();
    const fresh: OneTimePrekey[] = [];
    for (let i = 0; i < otks.length; i++) {
      const o = otks[i]!;
      if (seen.has(o.id)) return fail(ErrorCode.BAD_FIELD, `otk[${i}]: id ${o.id} appears twice in this batch`);
      seen.add(o.id);
      const stored = this.q.otk!.get(account, device, o.id) as { k: Uint8Array } | null;
      if (stored === null) fresh.push(o);
      else if (!sameBytes(stored.k, o.k)) return fail(ErrorCode.BAD_FIELD, `otk[${i}]: id ${o.id} is already stored with another key; one-time prekey ids must be unique per device`);
    }
    const before = this.countOf(account, device);
    if (before + fresh.length > limits.maxOtk) {
      return fail(
        ErrorCode.TOO_MANY_KEYS,
        `${fresh.length} new one-time prekeys would make ${before + fresh.length}, above the limit of ${limits.maxOtk} per device; ${before} stored, room for ${limits.maxOtk - before}`,
      );
    }
    for (const o of fresh) this.q.insertOtk!.run(account, device, o.id, o.k);
    const n = before + fresh.length;
    if (n >= limits.lowOtk) this.q.resetLow!.run(account, device); // the stock is back up: the next crossing is reported again
    return ok({ n, added: fresh.length });
  }

  publish(account: string, device: number, keys: DeviceKeys, otks: readonly OneTimePrekey[], limits: PrekeyLimits): Result<{ changed: boolean; n: number; added: number }> {
    return refusable(() => this.db.transaction((): Result<{ changed: boolean; n: number; added: number }> => {
      const old = this.row(account, device);
      const changed = old === null || !sameBytes(old.ik, keys.ik) || !sameBytes(old.dh, keys.dh);
      if (!changed && old.spk_id === keys.spk.id && !sameBytes(old.spk, keys.spk.k)) {
        return fail(ErrorCode.BAD_FIELD, `spk.id ${keys.spk.id} is the current signed prekey's id with another key; give a new signed prekey a new id`);
      }
      if (changed && old !== null) {
        this.q.dropOtks!.run(account, device);
        this.q.resetLow!.run(account, device);
      }
      this.q.upsert!.run(account, device, keys.ik, keys.dh, keys.dhs, keys.kv, keys.spk.id, keys.spk.k, keys.spk.s, Date.now());
      const r = this.insertPrekeys(account, device, otks, limits);
      // Throwing rolls the whole transaction back: a refused batch must not leave a half-changed identity.
      if (!r.ok) throw new Refused(fail(r.reason, r.message));
      return ok({ changed, ...r.value });
    }).immediate());
  }

  rotate(account: string, device: number, spk: SignedPrekey): Result<{ n: number }> {
    const old = this.row(account, device);
    if (old === null) return fail(ErrorCode.NOT_FOUND, "this device has published no keys; keys.publish comes first");
    if (old.spk_id === spk.id && !sameBytes(old.spk, spk.k)) {
      return fail(ErrorCode.BAD_FIELD, `spk.id ${spk.id} is the current signed prekey's id with another key; give a new signed prekey a new id`);
    }
    this.q.rotate!.run(spk.id, spk.k, spk.s, Date.now(), account, device);
    return ok({ n: this.countOf(account, device) });
  }

  addPrekeys(account: string, device: number, otks: readonly OneTimePrekey[], limits: PrekeyLimits): Result<{ n: number; added: number }> {
    return refusable(() => this.db.transaction((): Result<{ n: number; added: number }> => {
      if (this.row(account, device) === null) return fail(ErrorCode.NOT_FOUND, "this device has published no keys; keys.publish comes first");
      const r = this.insertPrekeys(account, device, otks, limits);
      if (!r.ok) throw new Refused(fail(r.reason, r.message));
      return r;
    }).immediate());
  }

  count(account: string, device: number): number {
    return this.countOf(account, device);
  }

  take(account: string, devices: readonly number[], lowOtk: number): TakeResult {
    return this.db.transaction((): TakeResult => {
      const bundles: Bundle[] = [];
      const low: { device: number; n: number }[] = [];
      for (const device of devices) {
        const r = this.row(account, device);
        if (r === null) continue;
        const b: Bundle = { device, ...toKeys(r) };
        const o = this.q.takeOtk!.get(account, device) as OneTimePrekey | null;
        if (o !== null) b.otk = { id: o.id, k: o.k };
        bundles.push(b);
        if (r.low === 0) {
          const n = this.countOf(account, device);
          if (n < lowOtk) {
            this.q.setLow!.run(account, device);
            low.push({ device, n });
          }
        }
      }
      return { bundles, low };
    }).immediate();
  }

  drop(account: string, device: number): boolean {
    return this.db.transaction(() => {
      const a = this.q.dropOtks!.run(account, device).changes;
      const b = this.q.dropIdentity!.run(account, device).changes;
      return a + b > 0;
    }).immediate();
  }

  dropAccount(account: string): number {
    return this.db.transaction(() => {
      this.q.dropAccountOtks!.run(account);
      return this.q.dropAccountIdentities!.run(account).changes;
    }).immediate();
  }

  close(): void {
    this.db.close();
  }
}

/** Carries a refusal out of a transaction so that SQLite rolls it back. */
class Refused extends Error {
  constructor(readonly result: Result<never>) {
    super(result.ok ? "refused" : result.message);
  }
}

/** Runs a transaction that may throw Refused, and turns that back into the refusal. */
function refusable<T>(run: () => Result<T>): Result<T> {
  try {
    return run();
  } catch (e) {
    if (e instanceof Refused) return e.result;
    throw e;
  }
}

function toKeys(r: IdentityRow): DeviceKeys {
  return { ik: r.ik, dh: r.dh, dhs: r.dhs, kv: r.kv, spk: { id: r.spk_id, k: r.spk, s: r.spk_sig } };
}

/**
 * Accounts, devices, enrollment codes, conversation sequence reservations and
 * read markers. The interface is what core depends on; SqliteAccountStore is
 * the one backend (test/store/accounts.contract.test.ts runs against any).
 *
 * Secrets: an enrollment code is stored only as its SHA-256 (codes carry 100
 * bits of entropy, so a fast hash is enough; a slow KDF would only matter for
 * human-chosen secrets, which we have none of). Device keys are public keys.
 */
import type { Database, Statement } from "bun:sqlite";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { ErrorCode, fail, ok, type Result } from "../protocol/errors.ts";
import { ACCOUNT_NAME_RE } from "../protocol/stanzas.ts";
import type { Durability } from "./sqlite.ts";
import { addColumn, openVersioned } from "./schema.ts";

export interface DeviceRecord {
  account: string;
  device: number;
  pk: Uint8Array;
  name: string;
  created: number;
  revoked: number | null;
  /**
   * Key version: changes whenever the device publishes a new end-to-end
   * identity (the keys module sets it); 0 until it publishes one. Senders
   * name the version they encrypted for, so the server can refuse a payload
   * made for old keys (`devices_stale`).
   */
  kv: number;
}

export interface AccountStore {
  /** A stable random id of this server's data directory, bound into every login proof. */
  serverId(): string;
  createAccount(name: string, codeTtlSeconds: number): Result<{ code: string }>;
  /** A fresh enrollment code for an existing account; it replaces the account's earlier codes (they no longer enroll). */
  newEnrollCode(name: string, codeTtlSeconds: number): Result<{ code: string }>;
  accountExists(name: string): boolean;
  listAccounts(): string[];
  /** Consumes a code and adds the first (or a further) device. */
  enroll(name: string, code: string, pk: Uint8Array, deviceName: string, maxDevices: number): Result<{ device: number }>;
  /** Adds a device approved by an existing one. */
  addDevice(name: string, pk: Uint8Array, deviceName: string, maxDevices: number): Result<{ device: number }>;
  /** Every device of the account, revoked ones included (their keys stay refused). */
  devices(name: string): DeviceRecord[];
  /** One device, revoked or not; null when unknown. */
  device(name: string, device: number): DeviceRecord | null;
  revokeDevice(name: string, device: number): Result<{ revoked: number }>;
  /** Sets an active device's key version; false when the device is unknown or revoked. */
  setKeyVersion(name: string, device: number, kv: number): boolean;
  /** Reserves `block` more sequence numbers for a conversation; returns the new upper bound. */
  reserveSeq(conv: string, block: number): number;
  /** Moves a read marker forward; returns false when `seq` is not above the stored one. */
  advanceReadMark(account: string, peer: string, seq: number): boolean;
  readMark(account: string, peer: string): number;
  setLastSeen(account: string, ts: number): void;
  lastSeen(account: string): number | null;
  close(): void;
}

const sha256 = (s: string) => createHash("sha256").update(s).digest();
const B32 = "abcdefghijkmnpqrstuvwxyz23456789"; // no l, o, 0, 1: codes are read aloud and typed
function newCode(): string {
  const bytes = randomBytes(20);
  let out = "";
  for (let i = 0; i < 20; i++) out += B32[bytes[i]! & 31];
  return `${out.slice(0, 5)}-${out.slice(5, 10)}-${out.slice(10, 15)}-${out.slice(15, 20)}`;
}
/** Codes are compared without dashes, spaces or case, as people type them. */
const normCode = (code: string) => code.toLowerCase().replace(/[^a-z0-9]/g, "");

export class SqliteAccountStore implements AccountStore {
  readonly db: Database;
  private sid: string;
  private q: Record<string, Statement>;

  constructor(dataDir: string, durability: Durability = "process") {
    // Schema steps (src/store/schema.ts): 1 = 3337863.
    this.db = openVersioned(join(dataDir, "accounts.db"), durability, [
      (db) => {
        db.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS accounts (
        name TEXT PRIMARY KEY, created INTEGER NOT NULL, next_device INTEGER NOT NULL DEFAULT 1, last_seen INTEGER);
      CREATE TABLE IF NOT EXISTS devices (
        account TEXT NOT NULL REFERENCES accounts(name), device INTEGER NOT NULL, pk BLOB NOT NULL UNIQUE,
        name TEXT NOT NULL, created INTEGER NOT NULL, revoked INTEGER, PRIMARY KEY (account, device));
      CREATE TABLE IF NOT EXISTS enroll_codes (
        hash BLOB PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(name), expires INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS seqs (conv TEXT PRIMARY KEY, hi INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS read_marks (account TEXT NOT NULL, peer TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, peer));
    `);
        // Data directories made before key versions existed get the column here (cheap: SQLite adds it without a rewrite).
        addColumn("devices", "kv", "INTEGER NOT NULL DEFAULT 0")(db);
      },
    ]);
    this.db.run("INSERT OR IGNORE INTO meta (k, v) VALUES ('server_id', ?)", ["sb-" + randomBytes(12).toString("hex")]);
    this.sid = (this.db.query("SELECT v FROM meta WHERE k = 'server_id'").get() as { v: string }).v;
    const p = (sql: string) => this.db.prepare(sql);
    this.q = {
      exists: p("SELECT 1 AS x FROM accounts WHERE name = ?"),
      insertAccount: p("INSERT INTO accounts (name, created) VALUES (?, ?)"),
      insertCode: p("INSERT INTO enroll_codes (hash, account, expires) VALUES (?, ?, ?)"),
      findCode: p("SELECT account, expires FROM enroll_codes WHERE hash = ?"),
      deleteCode: p("DELETE FROM enroll_codes WHERE hash = ?"),
      deleteCodesOf: p("DELETE FROM enroll_codes WHERE account = ?"),
      purgeCodes: p("DELETE FROM enroll_codes WHERE expires < ?"),
      devices: p("SELECT account, device, pk, name, created, revoked, kv FROM devices WHERE account = ? ORDER BY device"),
      device: p("SELECT account, device, pk, name, created, revoked, kv FROM devices WHERE account = ? AND device = ?"),
      setKv: p("UPDATE devices SET kv = ? WHERE account = ? AND device = ? AND revoked IS NULL"),
      activeCount: p("SELECT COUNT(*) AS n FROM devices WHERE account = ? AND revoked IS NULL"),
      pkUsed: p("SELECT 1 AS x FROM devices WHERE pk = ?"),
      nextDevice: p("UPDATE accounts SET next_device = next_device + 1 WHERE name = ? RETURNING next_device - 1 AS d"),
      insertDevice: p("INSERT INTO devices (account, device, pk, name, created) VALUES (?, ?, ?, ?, ?)"),
      revoke: p("UPDATE devices SET revoked = ? WHERE account = ? AND device = ? AND revoked IS NULL"),
      seq: p("INSERT INTO seqs (conv, hi) VALUES (?, ?) ON CONFLICT (conv) DO UPDATE SET hi = hi + excluded.hi RETURNING hi"),
      readMark: p("SELECT seq FROM read_marks WHERE account = ? AND peer = ?"),
      setReadMark: p(
        "INSERT INTO read_marks (account, peer, seq) VALUES (?, ?, ?) ON CONFLICT (account, peer) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > seq",
      ),
      setLastSeen: p("UPDATE accounts SET last_seen = ? WHERE name = ?"),
      lastSeen: p("SELECT last_seen FROM accounts WHERE name = ?"),
      list: p("SELECT name FROM accounts ORDER BY name"),
    };
  }

  serverId(): string {
    return this.sid;
  }

  accountExists(name: string): boolean {
    return this.q.exists!.get(name) !== null;
  }

  listAccounts(): string[] {
    return (this.q.list!.all() as { name: string }[]).map((r) => r.name);
  }

  createAccount(name: string, ttl: number): Result<{ code: string }> {
    if (!ACCOUNT_NAME_RE.test(name)) {
      return fail(ErrorCode.BAD_FIELD, "account names are 1..32 characters of a-z 0-9 _ . - and start with a letter or digit");
    }
    return this.db.transaction(() => {
      if (this.accountExists(name)) return fail<{ code: string }>(ErrorCode.FORBIDDEN, `account ${name} already exists`);
      this.q.insertAccount!.run(name, Date.now());
      return this.issueCode(name, ttl);
    }).immediate();
  }

  newEnrollCode(name: string, ttl: number): Result<{ code: string }> {
    if (!this.accountExists(name)) return fail(ErrorCode.UNKNOWN_USER, `no account ${name}`);
    // One live code per account: a code handed out earlier (and maybe seen by someone else) stops working.
    return this.db.transaction(() => {
      this.q.deleteCodesOf!.run(name);
      return this.issueCode(name, ttl);
    }).immediate();
  }

  private issueCode(name: string, ttl: number): Result<{ code: string }> {
    const code = newCode();
    this.q.purgeCodes!.run(Date.now());
    this.q.insertCode!.run(sha256(normCode(code)), name, Date.now() + ttl * 1000);
    return ok({ code });
  }

  enroll(name: string, code: string, pk: Uint8Array, deviceName: string, maxDevices: number): Result<{ device: number }> {
    return this.db.transaction(() => {
      const hash = sha256(normCode(code));
      const row = this.q.findCode!.get(hash) as { account: string; expires: number } | null;
      if (!row || row.account !== name || row.expires < Date.now()) {
        return fail<{ device: number }>(ErrorCode.BAD_CODE, "the enrollment code is unknown, used or expired; ask for a new one with `switchboard user code NAME`");
      }
      const added = this.insertDevice(name, pk, deviceName, maxDevices);
      if (added.ok) this.q.deleteCode!.run(hash); // one-time: spent only when it worked
      return added;
    }).immediate();
  }

  addDevice(name: string, pk: Uint8Array, deviceName: string, maxDevices: number): Result<{ device: number }> {
    return this.db.transaction(() => this.insertDevice(name, pk, deviceName, maxDevices)).immediate();
  }

  private insertDevice(name: string, pk: Uint8Array, deviceName: string, maxDevices: number): Result<{ device: number }> {
    if (!this.accountExists(name)) return fail(ErrorCode.UNKNOWN_USER, `no account ${name}`);
    const n = (this.q.activeCount!.get(name) as { n: number }).n;
    if (n >= maxDevices) return fail(ErrorCode.TOO_MANY_DEVICES, `account ${name} already has ${n} devices (the limit is ${maxDevices}); revoke one first`);
    if (this.q.pkUsed!.get(pk) !== null) return fail(ErrorCode.KEY_IN_USE, "this public key is already registered (or was, and was revoked): generate a new key");
    const { d } = this.q.nextDevice!.get(name) as { d: number };
    this.q.insertDevice!.run(name, d, pk, deviceName, Date.now());
    return ok({ device: d });
  }

  devices(name: string): DeviceRecord[] {
    return (this.q.devices!.all(name) as DeviceRecord[]).map((r) => ({ ...r, pk: new Uint8Array(r.pk) }));
  }

  device(name: string, device: number): DeviceRecord | null {
    const r = this.q.device!.get(name, device) as DeviceRecord | null;
    return r ? { ...r, pk: new Uint8Array(r.pk) } : null;
  }

  revokeDevice(name: string, device: number): Result<{ revoked: number }> {
    const now = Date.now();
    const changed = this.q.revoke!.run(now, name, device).changes;
    if (changed === 0) return fail(ErrorCode.UNKNOWN_DEVICE, `account ${name} has no active device ${device}`);
    return ok({ revoked: now });
  }

  setKeyVersion(name: string, device: number, kv: number): boolean {
    if (!Number.isInteger(kv) || kv < 0 || kv > 0xffffffff) throw new Error(`setKeyVersion: kv must be an integer 0..2^32-1, got ${kv}`);
    return this.q.setKv!.run(kv, name, device).changes > 0;
  }

  reserveSeq(conv: string, block: number): number {
    return (this.q.seq!.get(conv, block) as { hi: number }).hi;
  }

  advanceReadMark(account: string, peer: string, seq: number): boolean {
    return this.q.setReadMark!.run(account, peer, seq).changes > 0;
  }

  readMark(account: string, peer: string): number {
    const r = this.q.readMark!.get(account, peer) as { seq: number } | null;
    return r ? r.seq : 0;
  }

  setLastSeen(account: string, ts: number): void {
    this.q.setLastSeen!.run(ts, account);
  }

  lastSeen(account: string): number | null {
    const r = this.q.lastSeen!.get(account) as { last_seen: number | null } | null;
    return r ? r.last_seen : null;
  }

  close(): void {
    this.db.close();
  }
}

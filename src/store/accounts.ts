/**
 * Accounts, devices, key versions and enrollment codes: core's facts, in
 * accounts.db. The interface is what core depends on; SqliteAccountStore is
 * the one backend (test/store/accounts.contract.test.ts runs against any).
 * The same file holds the sequence reservations (src/store/seqs.ts, a store
 * of its own). Module data is not here: 3337863 kept 1:1 read marks and last
 * seen in this file; schema step 2 hands them over to their modules' files
 * (accounts-schema.ts) and drops them.
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
import { ACCOUNTS_SCHEMA, handOver } from "./accounts-schema.ts";
import { openVersioned } from "./schema.ts";

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

/** A key resumption tickets are MACed with (docs/PROTOCOL.md §4.11): its id goes into each ticket. */
export interface TicketKey {
  id: number;
  key: Uint8Array;
  /** ms */
  created: number;
}

/** A ticket key of the node `sid`, derived for one shard, brought here by a move of that shard (core/tickets.ts). */
export interface MovedTicketKey {
  shard: number;
  sid: string;
  id: number;
  key: Uint8Array;
  /** ms: no ticket made with it is valid after this */
  expires: number;
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
  /**
   * What a login needs, in one read: the key of an active device (null when unknown or revoked) and whether its
   * account is disabled (false when the device is not active: the login is refused before that is asked).
   */
  loginKey(name: string, device: number): { pk: Uint8Array | null; disabled: boolean };
  revokeDevice(name: string, device: number): Result<{ revoked: number }>;
  /** Sets an active device's key version; false when the device is unknown or revoked. */
  setKeyVersion(name: string, device: number, kv: number): boolean;
  // Operator controls (`switchboard user ...`, through the server's admin API: src/core/admin.ts).
  /** Every account with its active device count and whether it is disabled, by name. */
  accountSummaries(): AccountSummary[];
  isDisabled(name: string): boolean;
  /** Disables or enables an account; `changed` is false when it already was so. */
  setDisabled(name: string, disabled: boolean): Result<{ changed: boolean }>;
  /**
   * Deletes the account, its devices (revoked ones too) and its enrollment codes, and
   * keeps its name from `createAccount` until `reservedUntil` (ms): whoever took the name next would
   * receive what others still send to it. Returns every device id it had (to drop their queues).
   */
  deleteAccount(name: string, reservedUntil: number): Result<{ devices: number[] }>;
  /** The deletion record of a name still reserved, or null. */
  tombstone(name: string): { deleted: number; until: number } | null;
  /**
   * What a resume checks without a read per login (core/directory.ts, Tickets.check): the accounts disabled now,
   * the devices revoked and the accounts deleted at or after `since` (ms); of every account, or of `name` only.
   */
  loginChanges(since: number, name?: string): LoginChanges;
  /**
   * The resumption-ticket keys, newest first: the current one and the one before it (tickets it MACed are
   * still checked). When there is none, or the current one is `rotateMs` old or older, a new random key
   * becomes current first and all but the two newest are deleted, in one transaction: kept with the data
   * directory, so tickets survive a restart, and two processes on one directory agree on the keys.
   */
  ticketKeys(now: number, rotateMs: number): TicketKey[];
  /** Other nodes' ticket keys for shards moved here (core/tickets.ts): their tickets keep verifying until `expires`. */
  movedTicketKeys(): MovedTicketKey[];
  /** Replaces every moved ticket key kept here with `keys` (one write). */
  putMovedTicketKeys(keys: readonly MovedTicketKey[]): void;
  /**
   * Cluster shard moves (src/core/cluster/move.ts): every row of these accounts (the account, its devices, revoked
   * ones too, its enrollment codes) and the sequence rows `conv` picks, as plain rows for `importRows` on another node.
   */
  exportRows(names: readonly string[], conv?: (c: string) => boolean): AccountRows;
  /**
   * Up to `limit` sequence bounds whose conversation key sorts after `after` (in key order): a shard move reads
   * them page by page and keeps those its shard numbers, instead of holding every bound at once.
   */
  seqsAfter(after: string, limit: number): { conv: string; hi: number }[];
  /**
   * Up to `limit` names still reserved (their tombstones: deleted, until) that sort after `after`: a shard move ships
   * those of its shard, so that the new home refuses the name and the old devices' tickets as the old one did.
   */
  tombstonesAfter(after: string, limit: number): Tombstone[];
  /**
   * Writes rows from `exportRows` (one transaction): they replace what is here of those accounts; a sequence bound only
   * grows; a tombstone is kept with the later `until` of the two.
   */
  importRows(rows: AccountRows): void;
  /** Deletes every row of these accounts (devices, codes, the account; no tombstone): they moved to another node. */
  dropRows(names: readonly string[]): void;
  close(): void;
}

export interface AccountSummary {
  name: string;
  created: number;
  /** Active (not revoked) devices. */
  devices: number;
  disabled: boolean;
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

/** AccountStore.loginChanges: `at` is when (ms) the device was revoked or the account deleted. */
export interface LoginChanges {
  disabled: string[];
  revoked: { account: string; device: number; at: number }[];
  deleted: { account: string; at: number }[];
}

/** A deleted account's name, reserved until `until` (ms); `deleted` is when (ms). */
export interface Tombstone { name: string; deleted: number; until: number }

/** Rows of accounts.db tables (column → value), as exportRows gives them. */
export interface AccountRows {
  accounts: Record<string, unknown>[];
  devices: Record<string, unknown>[];
  codes: Record<string, unknown>[];
  seqs: { conv: string; hi: number }[];
  /** The reserved names among the accounts asked for (exportRows), or of a moving shard (chunks.ts, tombstonesAfter). */
  tombstones: Tombstone[];
}

const ROW_TABLES = [["accounts", "accounts", "name"], ["devices", "devices", "account"], ["codes", "enroll_codes", "account"]] as const;

export class SqliteAccountStore implements AccountStore {
  readonly db: Database;
  private sid: string;
  private q: Record<string, Statement>;

  constructor(dataDir: string, durability: Durability = "process") {
    this.db = openVersioned(join(dataDir, "accounts.db"), durability, ACCOUNTS_SCHEMA, (db) => handOver(db, dataDir));
    // 256 KiB of page cache instead of SQLite's 2 MiB: a login storm reads one device row per login, so the
    // default cache fills with leaf pages that are not read again soon and stays resident (≈ 1.6 MiB, 110 B
    // per idle connection at 15 000, BENCHMARKS.md 2026-12-03 10:20); the interior pages still fit, and a leaf
    // missed is one pread from the OS page cache.
    this.db.exec("PRAGMA cache_size = -256");
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
      // The account's flag in a subquery, not a JOIN: the same rows (a device row has its account), and about 4x
      // cheaper in SQLite 3.54 (2.7 against 10.5 µs per call over 5 000 devices, /tmp micro-benchmark on the shared
      // machine, 12:40 UTC 2026-12-03): one read per login, the dearest JS step of a resumed reconnect.
      loginKey: p("SELECT pk, (SELECT disabled FROM accounts WHERE name = ?1) IS NOT NULL AS disabled FROM devices WHERE account = ?1 AND device = ?2 AND revoked IS NULL"),
      setKv: p("UPDATE devices SET kv = ? WHERE account = ? AND device = ? AND revoked IS NULL"),
      activeCount: p("SELECT COUNT(*) AS n FROM devices WHERE account = ? AND revoked IS NULL"),
      pkUsed: p("SELECT 1 AS x FROM devices WHERE pk = ?"),
      nextDevice: p("UPDATE accounts SET next_device = next_device + 1 WHERE name = ? RETURNING next_device - 1 AS d"),
      insertDevice: p("INSERT INTO devices (account, device, pk, name, created) VALUES (?, ?, ?, ?, ?)"),
      revoke: p("UPDATE devices SET revoked = ? WHERE account = ? AND device = ? AND revoked IS NULL"),
      list: p("SELECT name FROM accounts ORDER BY name"),
      summaries: p(
        "SELECT name, created, disabled IS NOT NULL AS disabled, (SELECT COUNT(*) FROM devices d WHERE d.account = a.name AND d.revoked IS NULL) AS devices FROM accounts a ORDER BY name",
      ),
      disabled: p("SELECT disabled FROM accounts WHERE name = ?"),
      setDisabled: p("UPDATE accounts SET disabled = ? WHERE name = ? AND (disabled IS NULL) = (? IS NOT NULL)"),
      tombstone: p("SELECT deleted, until FROM tombstones WHERE name = ? AND until > ?"),
      purgeTombstones: p("DELETE FROM tombstones WHERE until <= ?"),
      insertTombstone: p("INSERT INTO tombstones (name, deleted, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET deleted = excluded.deleted, until = excluded.until"),
      allDevices: p("SELECT device FROM devices WHERE account = ? ORDER BY device"),
      deleteDevices: p("DELETE FROM devices WHERE account = ?"),
      deleteAccount: p("DELETE FROM accounts WHERE name = ?"),
    };
  }

  exportRows(names: readonly string[], conv?: (c: string) => boolean): AccountRows {
    const out: AccountRows = { accounts: [], devices: [], codes: [], seqs: [], tombstones: [] };
    for (const [k, table, col] of ROW_TABLES) {
      const q = this.db.query<Record<string, unknown>, [string]>(`SELECT * FROM ${table} WHERE ${col} = ?`);
      for (const n of names) out[k].push(...q.all(n));
    }
    const now = Date.now();
    for (const n of names) {
      const t = this.tombstone(n);
      if (t !== null && t.until > now) out.tombstones.push({ name: n, deleted: t.deleted, until: t.until });
    }
    // One scan of every conversation's bound: the caller picks those numbered by the moved accounts (a move pages with seqsAfter instead).
    if (conv !== undefined) for (const r of this.db.query<{ conv: string; hi: number }, []>("SELECT conv, hi FROM seqs").all()) if (conv(r.conv)) out.seqs.push(r);
    return out;
  }

  seqsAfter(after: string, limit: number): { conv: string; hi: number }[] {
    return this.db.query<{ conv: string; hi: number }, [string, number]>("SELECT conv, hi FROM seqs WHERE conv > ? ORDER BY conv LIMIT ?").all(after, limit);
  }

  tombstonesAfter(after: string, limit: number): Tombstone[] {
    return this.db.query<Tombstone, [string, number, number]>("SELECT name, deleted, until FROM tombstones WHERE name > ? AND until > ? ORDER BY name LIMIT ?").all(after, Date.now(), limit);
  }

  importRows(rows: AccountRows): void {
    this.db.transaction(() => {
      // What a moved-away account left here before (a shard moved back) is replaced: a device revoked meanwhile stays revoked.
      this.dropRows(rows.accounts.map((r) => r.name as string));
      for (const [k, table] of ROW_TABLES) {
        for (const r of rows[k]) {
          const cols = Object.keys(r);
          this.db.query(`INSERT OR IGNORE INTO ${table} (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`).run(...(Object.values(r) as never[]));
        }
      }
      const seq = this.db.query("INSERT INTO seqs (conv, hi) VALUES (?, ?) ON CONFLICT (conv) DO UPDATE SET hi = max(hi, excluded.hi)");
      for (const r of rows.seqs) seq.run(r.conv, r.hi);
      const t = this.db.query(
        "INSERT INTO tombstones (name, deleted, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET deleted = max(deleted, excluded.deleted), until = max(until, excluded.until)",
      );
      for (const r of rows.tombstones ?? []) t.run(r.name, r.deleted, r.until); // `?? []`: a shipment of a node from before tombstones moved
    }).immediate();
  }

  dropRows(names: readonly string[]): void {
    this.db.transaction(() => {
      for (const n of names) {
        this.q.deleteCodesOf!.run(n);
        this.q.deleteDevices!.run(n);
        this.q.deleteAccount!.run(n);
      }
    }).immediate();
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
      const t = this.tombstone(name);
      if (t !== null) {
        const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
        return fail<{ code: string }>(
          ErrorCode.FORBIDDEN,
          `account ${name} was deleted on ${day(t.deleted)}; its name is reserved until ${day(t.until)} (queue.retention), so that nobody inherits what is still sent to it`,
        );
      }
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

  loginKey(name: string, device: number): { pk: Uint8Array | null; disabled: boolean } {
    const r = this.q.loginKey!.get(name, device) as { pk: Uint8Array; disabled: number } | null;
    return r ? { pk: new Uint8Array(r.pk), disabled: r.disabled === 1 } : { pk: null, disabled: false };
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

  accountSummaries(): AccountSummary[] {
    return (this.q.summaries!.all() as (Omit<AccountSummary, "disabled"> & { disabled: number })[]).map((r) => ({ ...r, disabled: r.disabled === 1 }));
  }

  isDisabled(name: string): boolean {
    const r = this.q.disabled!.get(name) as { disabled: number | null } | null;
    return r !== null && r.disabled !== null;
  }

  setDisabled(name: string, disabled: boolean): Result<{ changed: boolean }> {
    if (!this.accountExists(name)) return fail(ErrorCode.UNKNOWN_USER, `no account ${name}`);
    const v = disabled ? Date.now() : null;
    return ok({ changed: this.q.setDisabled!.run(v, name, v).changes > 0 });
  }

  deleteAccount(name: string, reservedUntil: number): Result<{ devices: number[] }> {
    return this.db.transaction(() => {
      if (!this.accountExists(name)) return fail<{ devices: number[] }>(ErrorCode.UNKNOWN_USER, `no account ${name}`);
      const devices = (this.q.allDevices!.all(name) as { device: number }[]).map((r) => r.device);
      const now = Date.now();
      this.q.deleteCodesOf!.run(name);
      this.q.deleteDevices!.run(name);
      this.q.deleteAccount!.run(name);
      this.q.purgeTombstones!.run(now);
      this.q.insertTombstone!.run(name, now, reservedUntil);
      return ok({ devices });
    }).immediate();
  }

  tombstone(name: string): { deleted: number; until: number } | null {
    return (this.q.tombstone!.get(name, Date.now()) as { deleted: number; until: number } | null) ?? null;
  }

  loginChanges(since: number, name?: string): LoginChanges {
    const n = name ?? null;
    // Few rows: disabled accounts are the operator's, revokes and deletions of one ticket lifetime. Without `name`
    // (once, at start) a scan of devices: `revoked` has no index; with it, the account's rows by the primary key.
    return {
      disabled: (this.db.query("SELECT name FROM accounts WHERE disabled IS NOT NULL AND (?1 IS NULL OR name = ?1)").all(n) as { name: string }[]).map((r) => r.name),
      revoked: this.db.query("SELECT account, device, revoked AS at FROM devices WHERE revoked >= ?1 AND (?2 IS NULL OR account = ?2)").all(since, n) as LoginChanges["revoked"],
      deleted: this.db.query("SELECT name AS account, deleted AS at FROM tombstones WHERE deleted >= ?1 AND (?2 IS NULL OR name = ?2)").all(since, n) as LoginChanges["deleted"],
    };
  }

  ticketKeys(now: number, rotateMs: number): TicketKey[] {
    // In `meta` (one JSON row, no schema step): two keys, read at start and at each rotation check.
    const read = (): TicketKey[] => {
      const row = this.db.query("SELECT v FROM meta WHERE k = 'ticket_keys'").get() as { v: string } | null;
      const ks = row === null ? [] : (JSON.parse(row.v) as { id: number; key: string; created: number }[]);
      return ks.map((k) => ({ id: k.id, key: new Uint8Array(Buffer.from(k.key, "hex")), created: k.created }));
    };
    return this.db.transaction(() => {
      const ks = read();
      if (ks.length > 0 && now - ks[0]!.created < rotateMs) return ks;
      const next = [{ id: (ks[0]?.id ?? 0) + 1, key: new Uint8Array(randomBytes(32)), created: now }, ...ks.slice(0, 1)];
      const v = JSON.stringify(next.map((k) => ({ id: k.id, key: Buffer.from(k.key).toString("hex"), created: k.created })));
      this.db.run("INSERT INTO meta (k, v) VALUES ('ticket_keys', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", [v]);
      return next;
    }).immediate();
  }

  movedTicketKeys(): MovedTicketKey[] {
    const row = this.db.query("SELECT v FROM meta WHERE k = 'ticket_keys_moved'").get() as { v: string } | null;
    const ks = row === null ? [] : (JSON.parse(row.v) as (Omit<MovedTicketKey, "key"> & { key: string })[]);
    return ks.map((k) => ({ ...k, key: new Uint8Array(Buffer.from(k.key, "hex")) }));
  }

  putMovedTicketKeys(keys: readonly MovedTicketKey[]): void {
    const v = JSON.stringify(keys.map((k) => ({ ...k, key: Buffer.from(k.key).toString("hex") })));
    this.db.run("INSERT INTO meta (k, v) VALUES ('ticket_keys_moved', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", [v]);
  }

  close(): void {
    this.db.close();
  }
}

/**
 * The presence module's own store (presence.db, from ctx.database; nothing
 * outside this module reads it): per account, its contacts, the accounts it
 * blocked, its privacy policy, its last seen, and the accounts it has written
 * to ("talked": what makes a peer not a stranger).
 *
 * Every change is a user's explicit act (a contact added, a block) or rare
 * (last seen: at most every `presence.last_seen_write` seconds per online
 * account and once when it goes offline; a talked row once per new pair), so
 * each is written at once, one statement, no buffering: ~25 µs at
 * synchronous=NORMAL (38.7k single-row commits/s measured on this kind of machine, notes/bun-platform.md §4).
 * Reads happen once per account per process (the module caches the rules).
 */
import type { Database, Statement } from "bun:sqlite";
import { LAST_SEEN_SCHEMA, SqliteLastSeen } from "./last-seen.ts";

/** Who may see a field: 0 everyone, 1 my contacts, 2 nobody (docs/PROTOCOL.md §6.10). */
export const Policy = { EVERYONE: 0, CONTACTS: 1, NOBODY: 2 } as const;
export type Policy = (typeof Policy)[keyof typeof Policy];
export const POLICY_NAMES = ["everyone", "contacts", "nobody"] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export interface RulesRecord {
  contacts: string[];
  blocks: string[];
  talked: string[];
  /** Accounts of other nodes that block this one (cluster mode: sent here by their homes). */
  blockedBy: string[];
  /** Null: the account never set one (the server's default applies). */
  lastSeenPolicy: Policy | null;
  onlinePolicy: Policy | null;
  /** Minute-granular ms, or null if never seen (or never since this store exists). */
  lastSeen: number | null;
}

/**
 * presence.db's schema steps, applied by core (ctx.database): 1 = last seen
 * (last-seen.ts; core hands a 3337863 directory's rows over into it), 2 = contacts, blocks, talked, privacy.
 */
export const PRESENCE_SCHEMA = [
  ...LAST_SEEN_SCHEMA,
  `
    CREATE TABLE IF NOT EXISTS contacts (account TEXT NOT NULL, contact TEXT NOT NULL, PRIMARY KEY (account, contact)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS contacts_by_contact ON contacts (contact);
    CREATE TABLE IF NOT EXISTS blocks (account TEXT NOT NULL, blocked TEXT NOT NULL, PRIMARY KEY (account, blocked)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS blocks_by_blocked ON blocks (blocked);
    CREATE TABLE IF NOT EXISTS talked (account TEXT NOT NULL, peer TEXT NOT NULL, PRIMARY KEY (account, peer)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS talked_by_peer ON talked (peer);
    CREATE TABLE IF NOT EXISTS privacy (account TEXT PRIMARY KEY, last_seen INTEGER NOT NULL, online INTEGER NOT NULL) WITHOUT ROWID;
  `,
  // 3: cluster mode, the blocks of accounts homed on other nodes against this node's accounts, kept here (at the
  // blocked account's home) so that every check about a local account is made with local data (docs/CLUSTER.md).
  `
    CREATE TABLE IF NOT EXISTS blocked_by (account TEXT NOT NULL, by TEXT NOT NULL, node TEXT NOT NULL, PRIMARY KEY (account, by)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS blocked_by_node ON blocked_by (node);
  `,
];

export class PresenceStore {
  private q: Record<string, Statement>;
  private lastSeen: SqliteLastSeen;

  constructor(readonly db: Database) {
    this.lastSeen = new SqliteLastSeen(db);
    const p = (sql: string) => db.prepare(sql);
    this.q = {
      contacts: p("SELECT contact AS v FROM contacts WHERE account = ? ORDER BY contact"),
      blocks: p("SELECT blocked AS v FROM blocks WHERE account = ? ORDER BY blocked"),
      talked: p("SELECT peer AS v FROM talked WHERE account = ?"),
      blockedBy: p("SELECT by AS v FROM blocked_by WHERE account = ?"),
      setBlockedBy: p("INSERT OR REPLACE INTO blocked_by (account, by, node) VALUES (?, ?, ?)"),
      unsetBlockedBy: p("DELETE FROM blocked_by WHERE account = ? AND by = ?"),
      clearNode: p("DELETE FROM blocked_by WHERE node = ?"),
      byNode: p("SELECT DISTINCT account AS v FROM blocked_by WHERE node = ?"),
      allBlocks: p("SELECT account AS a, blocked AS b FROM blocks"),
      dropBlockedBy: p("DELETE FROM blocked_by WHERE account = ?1 OR by = ?1"),
      privacy: p("SELECT last_seen, online FROM privacy WHERE account = ?"),
      addContact: p("INSERT OR IGNORE INTO contacts (account, contact) VALUES (?, ?)"),
      removeContact: p("DELETE FROM contacts WHERE account = ? AND contact = ?"),
      block: p("INSERT OR IGNORE INTO blocks (account, blocked) VALUES (?, ?)"),
      unblock: p("DELETE FROM blocks WHERE account = ? AND blocked = ?"),
      talk: p("INSERT OR IGNORE INTO talked (account, peer) VALUES (?, ?)"),
      setPrivacy: p("INSERT INTO privacy (account, last_seen, online) VALUES (?, ?, ?) ON CONFLICT (account) DO UPDATE SET last_seen = excluded.last_seen, online = excluded.online"),
      dropContacts: p("DELETE FROM contacts WHERE account = ?1 OR contact = ?1"),
      dropBlocks: p("DELETE FROM blocks WHERE account = ?1 OR blocked = ?1"),
      dropTalked: p("DELETE FROM talked WHERE account = ?1 OR peer = ?1"),
      dropPrivacy: p("DELETE FROM privacy WHERE account = ?"),
    };
  }

  load(account: string): RulesRecord {
    const col = (s: Statement) => (s.all(account) as { v: string }[]).map((r) => r.v);
    const pr = this.q.privacy!.get(account) as { last_seen: number; online: number } | null;
    return {
      contacts: col(this.q.contacts!),
      blocks: col(this.q.blocks!),
      talked: col(this.q.talked!),
      blockedBy: col(this.q.blockedBy!),
      lastSeenPolicy: pr ? (pr.last_seen as Policy) : null,
      onlinePolicy: pr ? (pr.online as Policy) : null,
      lastSeen: this.lastSeen.get(account),
    };
  }

  addContacts(account: string, contacts: readonly string[]): void {
    this.db.transaction(() => {
      for (const c of contacts) this.q.addContact!.run(account, c);
    })();
  }

  removeContacts(account: string, contacts: readonly string[]): void {
    this.db.transaction(() => {
      for (const c of contacts) this.q.removeContact!.run(account, c);
    })();
  }

  block(account: string, other: string): void {
    this.q.block!.run(account, other);
  }

  unblock(account: string, other: string): void {
    this.q.unblock!.run(account, other);
  }

  /** Cluster mode: `by` (an account of node `node`) blocks the local `account`, or no longer does. */
  setBlockedBy(account: string, by: string, node: string, on: boolean): void {
    if (on) this.q.setBlockedBy!.run(account, by, node);
    else this.q.unsetBlockedBy!.run(account, by);
  }

  /**
   * Cluster mode: node `node`'s complete list of its accounts' blocks of accounts here (`clear`: its first chunk,
   * replacing what it sent before). Returns the local accounts whose rows changed (or may have).
   */
  replaceBlockedBy(node: string, rows: readonly [account: string, by: string][], clear: boolean): Set<string> {
    const touched = new Set<string>(rows.map(([a]) => a));
    this.db.transaction(() => {
      if (clear) {
        for (const r of this.q.byNode!.all(node) as { v: string }[]) touched.add(r.v);
        this.q.clearNode!.run(node);
      }
      for (const [a, by] of rows) this.q.setBlockedBy!.run(a, by, node);
    })();
    return touched;
  }

  /** Every block (blocker, blocked): read once at start in cluster mode, to resend those of remote accounts. */
  allBlocks(): [blocker: string, blocked: string][] {
    return (this.q.allBlocks!.all() as { a: string; b: string }[]).map((r) => [r.a, r.b]);
  }

  talked(account: string, peer: string): void {
    this.q.talk!.run(account, peer);
  }

  setPrivacy(account: string, lastSeen: Policy, online: Policy): void {
    this.q.setPrivacy!.run(account, lastSeen, online);
  }

  /** Writes several accounts' last seen in one transaction (the periodic write of online accounts). */
  setLastSeen(rows: readonly [account: string, ts: number][]): void {
    if (rows.length === 0) return;
    this.db.transaction(() => {
      for (const [a, ts] of rows) this.lastSeen.set(a, ts);
    })();
  }

  /** The account was deleted: its rows, and every row naming it in others' lists. */
  drop(account: string): void {
    this.db.transaction(() => {
      for (const k of ["dropContacts", "dropBlocks", "dropTalked", "dropPrivacy", "dropBlockedBy"]) this.q[k]!.run(account);
      this.lastSeen.drop(account);
    })();
  }
}

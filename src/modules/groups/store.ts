/**
 * Groups: names, members and their roles, and per-member delivery and read
 * marks; plus one small row per group message (who sent which sequence
 * number), which read receipts and the aggregate state of a message need.
 * Payloads are never here: they live in the per-device delivery queues
 * like 1:1 messages, and only until their devices acknowledge them.
 *
 * Membership changes are rare and written at once. Marks move on every
 * acknowledgement (a 1024-member group moves up to 1023 of them per
 * message), and message rows come with every group message, so both are
 * buffered and written in one transaction every `flushMs` (write-back, as
 * the delivery queue does). What a crash can lose of them is the last
 * flush's worth of marks and message rows: the aggregate "delivered to X
 * of N" may then under-count, and read receipts for those messages are not
 * sent; no message is lost (messages are in the delivery queues, durable
 * before `sent`).
 *
 * The groups module's own store: its file (groups.db) comes from core
 * (ctx.database), and nothing outside this module reads it.
 */
import type { Database, Statement } from "bun:sqlite";
import type { StorageView } from "../../core/context.ts";

export const Role = { MEMBER: 0, ADMIN: 1 } as const;
export type Role = (typeof Role)[keyof typeof Role];

export interface MemberRecord {
  account: string;
  role: Role;
  /** The group sequence number of the event that added the member: it receives nothing below it. */
  joined: number;
  /** Highest group sequence number acknowledged by any of the member's devices. */
  dlv: number;
  /** Highest group sequence number the member marked read. */
  read: number;
}

export interface GroupRecord {
  id: string;
  name: string;
  created: number;
  creator: string;
  /** In the order they joined (by `joined`, then name). */
  members: MemberRecord[];
}

export interface GroupMessageRecord {
  g: string;
  seq: number;
  sender: string;
  device: number;
  cid: string;
  ts: number;
}

export interface GroupStore {
  /** Creates a group with `creator` as its admin and the others as members, all joined at `seq`. False if the id exists. */
  create(id: string, name: string, creator: string, members: string[], seq: number, ts: number): boolean;
  get(id: string): GroupRecord | null;
  /** Ids of the groups an account belongs to. */
  groupsOf(account: string): string[];
  addMembers(id: string, accounts: string[], seq: number): void;
  removeMembers(id: string, accounts: string[]): void;
  setRole(id: string, accounts: string[], role: Role): void;
  rename(id: string, name: string): void;
  /** Deletes a group and its message rows (its last member left). */
  delete(id: string): void;
  /** Buffers mark updates (only ever raised). */
  saveMark(id: string, account: string, dlv: number, read: number): void;
  /**
   * Raises a member's read mark to `seq`, durably before it returns (one
   * single-row write: reads are rare next to messages, and a mark that went
   * back after a crash would send its read receipts again). False when the
   * mark is already at or above `seq`, or the account is not a member.
   */
  advanceRead(id: string, account: string, seq: number): boolean;
  /** Buffers one message row. */
  recordMessage(rec: GroupMessageRecord): void;
  message(id: string, seq: number): GroupMessageRecord | null;
  /** Distinct senders of messages with after < seq <= upTo. */
  senders(id: string, after: number, upTo: number): string[];
  /** Deletes message rows older than `cutoff` (ms); returns how many. */
  expireMessages(cutoff: number): number;
  /** Writes everything buffered now. */
  flush(): void;
  close(): void;
}

/** groups.db's schema steps, applied by core (ctx.database): 1 = 3337863. */
export const GROUPS_SCHEMA = [
  `
    CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY, name TEXT NOT NULL, created INTEGER NOT NULL, creator TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS members (
      g TEXT NOT NULL, account TEXT NOT NULL, role INTEGER NOT NULL, joined INTEGER NOT NULL,
      dlv INTEGER NOT NULL DEFAULT 0, read INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (g, account));
    CREATE INDEX IF NOT EXISTS members_by_account ON members (account);
    CREATE TABLE IF NOT EXISTS gmsgs (
      g TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL, device INTEGER NOT NULL, cid TEXT NOT NULL, ts INTEGER NOT NULL,
      PRIMARY KEY (g, seq)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS gmsgs_by_ts ON gmsgs (ts);
  `,
];

export class SqliteGroupStore implements GroupStore {
  readonly db: Database;
  private q: Record<string, Statement>;
  private marks = new Map<string, { id: string; account: string; dlv: number; read: number }>();
  private msgs: GroupMessageRecord[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** A flush failed on the disk: what it held is back in the buffers, the storage alarm is up, a retry is armed. */
  private failing = false;

  /** `storage`: where a flush that fails on the disk is reported (ctx.storage); without it such a failure throws. */
  constructor(db: Database, private flushMs = 20, private storage: StorageView | null = null) {
    this.db = db;
    const p = (sql: string) => this.db.prepare(sql);
    this.q = {
      insertGroup: p("INSERT OR IGNORE INTO groups (id, name, created, creator) VALUES (?, ?, ?, ?)"),
      group: p("SELECT id, name, created, creator FROM groups WHERE id = ?"),
      members: p("SELECT account, role, joined, dlv, read FROM members WHERE g = ? ORDER BY joined, account"),
      groupsOf: p("SELECT g FROM members WHERE account = ? ORDER BY g"),
      addMember: p("INSERT INTO members (g, account, role, joined) VALUES (?, ?, ?, ?) ON CONFLICT (g, account) DO NOTHING"),
      removeMember: p("DELETE FROM members WHERE g = ? AND account = ?"),
      setRole: p("UPDATE members SET role = ? WHERE g = ? AND account = ?"),
      rename: p("UPDATE groups SET name = ? WHERE id = ?"),
      deleteGroup: p("DELETE FROM groups WHERE id = ?"),
      deleteMembers: p("DELETE FROM members WHERE g = ?"),
      deleteMsgs: p("DELETE FROM gmsgs WHERE g = ?"),
      mark: p("UPDATE members SET dlv = MAX(dlv, ?), read = MAX(read, ?) WHERE g = ? AND account = ?"),
      advanceRead: p("UPDATE members SET read = ? WHERE g = ? AND account = ? AND read < ?"),
      insertMsg: p("INSERT OR IGNORE INTO gmsgs (g, seq, sender, device, cid, ts) VALUES (?, ?, ?, ?, ?, ?)"),
      msg: p("SELECT g, seq, sender, device, cid, ts FROM gmsgs WHERE g = ? AND seq = ?"),
      senders: p("SELECT DISTINCT sender FROM gmsgs WHERE g = ? AND seq > ? AND seq <= ?"),
      expire: p("DELETE FROM gmsgs WHERE ts < ?"),
    };
  }

  create(id: string, name: string, creator: string, members: string[], seq: number, ts: number): boolean {
    return this.db.transaction(() => {
      if (this.q.insertGroup!.run(id, name, ts, creator).changes === 0) return false;
      this.q.addMember!.run(id, creator, Role.ADMIN, seq);
      for (const m of members) if (m !== creator) this.q.addMember!.run(id, m, Role.MEMBER, seq);
      return true;
    })();
  }

  get(id: string): GroupRecord | null {
    const g = this.q.group!.get(id) as Omit<GroupRecord, "members"> | null;
    if (!g) return null;
    const members = this.q.members!.all(id) as MemberRecord[];
    // Buffered marks are newer than the rows.
    for (const m of members) {
      const b = this.marks.get(`${id}\u0000${m.account}`);
      if (b) {
        m.dlv = Math.max(m.dlv, b.dlv);
        m.read = Math.max(m.read, b.read);
      }
    }
    return { ...g, members };
  }

  groupsOf(account: string): string[] {
    return (this.q.groupsOf!.all(account) as { g: string }[]).map((r) => r.g);
  }

  addMembers(id: string, accounts: string[], seq: number): void {
    this.db.transaction(() => {
      for (const a of accounts) this.q.addMember!.run(id, a, Role.MEMBER, seq);
    })();
  }

  removeMembers(id: string, accounts: string[]): void {
    this.db.transaction(() => {
      for (const a of accounts) {
        this.q.removeMember!.run(id, a);
        this.marks.delete(`${id}\u0000${a}`);
      }
    })();
  }

  setRole(id: string, accounts: string[], role: Role): void {
    this.db.transaction(() => {
      for (const a of accounts) this.q.setRole!.run(role, id, a);
    })();
  }

  rename(id: string, name: string): void {
    this.q.rename!.run(name, id);
  }

  delete(id: string): void {
    this.flush();
    this.db.transaction(() => {
      this.q.deleteMembers!.run(id);
      this.q.deleteMsgs!.run(id);
      this.q.deleteGroup!.run(id);
    })();
  }

  advanceRead(id: string, account: string, seq: number): boolean {
    const buffered = this.marks.get(`${id}\u0000${account}`);
    if (buffered !== undefined && buffered.read >= seq) return false;
    return this.q.advanceRead!.run(seq, id, account, seq).changes > 0;
  }

  saveMark(id: string, account: string, dlv: number, read: number): void {
    const key = `${id}\u0000${account}`;
    const m = this.marks.get(key);
    if (m) {
      if (dlv > m.dlv) m.dlv = dlv;
      if (read > m.read) m.read = read;
    } else this.marks.set(key, { id, account, dlv, read });
    this.schedule();
  }

  recordMessage(rec: GroupMessageRecord): void {
    this.msgs.push(rec);
    this.schedule();
  }

  message(id: string, seq: number): GroupMessageRecord | null {
    for (const m of this.msgs) if (m.g === id && m.seq === seq) return m;
    return (this.q.msg!.get(id, seq) as GroupMessageRecord | null) ?? null;
  }

  senders(id: string, after: number, upTo: number): string[] {
    const out = new Set((this.q.senders!.all(id, after, upTo) as { sender: string }[]).map((r) => r.sender));
    for (const m of this.msgs) if (m.g === id && m.seq > after && m.seq <= upTo) out.add(m.sender);
    return [...out];
  }

  expireMessages(cutoff: number): number {
    this.flush();
    return this.q.expire!.run(cutoff).changes;
  }

  private schedule(): void {
    if (this.timer === null) this.timer = setTimeout(this.onTimer, this.flushMs);
  }

  /**
   * The timer's flush: a disk fault there is kept for the retry (flush), not thrown into the event loop. A retry
   * that finds the file closed (the server stopped while the disk was full) ends quietly: what it held is the
   * last flush's worth that a crash may lose (above), and an uncaught throw would end the process instead.
   */
  private readonly onTimer = (): void => {
    const retrying = this.failing;
    try {
      this.flush();
    } catch (e) {
      if (!retrying) throw e;
    }
  };

  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.marks.size === 0 && this.msgs.length === 0) return;
    const marks = this.marks;
    const msgs = this.msgs;
    this.marks = new Map();
    this.msgs = [];
    try {
      this.db.transaction(() => {
        for (const m of marks.values()) this.q.mark!.run(m.dlv, m.read, m.id, m.account);
        for (const r of msgs) this.q.insertMsg!.run(r.g, r.seq, r.sender, r.device, r.cid, r.ts);
      })();
    } catch (e) {
      // Rolled back whole (SQLite does for SQLITE_FULL and IOERR): the marks and rows go back as they were
      // (nothing was buffered in between: this runs in one turn) and are written by the retry, as the queue does.
      this.marks = marks;
      this.msgs = msgs;
      if (this.storage === null || !this.storage.fault("groups", e)) throw e;
      this.failing = true;
      this.timer = setTimeout(this.onTimer, this.storage.retryMs);
      this.timer.unref?.(); // a retry must not hold a stopping process
      return;
    }
    if (this.failing) {
      this.failing = false;
      this.storage!.healthy("groups");
    }
  }

  close(): void {
    this.flush();
    if (this.timer !== null) (clearTimeout(this.timer), (this.timer = null)); // a full disk at close: nothing left to retry into
    this.db.close();
  }
}

/**
 * The per-peer outbox of the node links (docs/CLUSTER.md, "Node links"): link items this node made for a peer
 * node that must survive this node's death before that peer's ack (today the `d` items: receipts and events for
 * accounts homed there). A row is written before its item first goes out and removed at the peer's ack; rows
 * left at a start are sent again with their keys, which the peer dedups (its acceptance record per link key).
 * One file per node (`<data_dir>/outbox.db`), beside the shard data.
 */
import type { Database, Statement } from "bun:sqlite";
import { openDatabase, type Durability } from "./sqlite.ts";

export interface OutboxRow {
  key: string;
  body: Uint8Array;
}

export interface PeerOutbox {
  /**
   * Keeps `rows` for `peer` and forgets its keys `remove` (acked), all or none in one transaction, durable when it
   * returns (at the file's durability). A key kept already stays as it was. The link removes what was acked with its
   * next put: one transaction per batch instead of two.
   */
  put(peer: string, rows: readonly OutboxRow[], remove?: readonly string[]): void;
  /** Forgets these keys of `peer` (acked); unknown keys are ignored. */
  remove(peer: string, keys: readonly string[]): void;
  /** What is kept for `peer`, in the order it was put. */
  list(peer: string): OutboxRow[];
  /** The rows of these keys of `peer`, in the order of `keys`; keys not kept are left out. */
  get(peer: string, keys: readonly string[]): OutboxRow[];
  /** The peers with anything kept. */
  peers(): string[];
  /** Rows kept for `peer` (all peers without it). */
  count(peer?: string): number;
  close(): void;
}

export class SqlitePeerOutbox implements PeerOutbox {
  /** Public for its WAL checkpoints, which the commit Worker runs (server.ts); written only through this class. */
  readonly db: Database;
  private readonly ins: Statement;
  private readonly del: Statement;
  private readonly sel: Statement;
  private readonly one: Statement;

  constructor(path: string, durability: Durability = "process") {
    this.db = openDatabase(path, durability);
    this.db.exec("CREATE TABLE IF NOT EXISTS outbox (n INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, UNIQUE (peer, key))");
    this.ins = this.db.prepare("INSERT OR IGNORE INTO outbox (peer, key, body) VALUES (?, ?, ?)");
    this.del = this.db.prepare("DELETE FROM outbox WHERE peer = ? AND key = ?");
    this.sel = this.db.prepare("SELECT key, body FROM outbox WHERE peer = ? ORDER BY n");
    this.one = this.db.prepare("SELECT body FROM outbox WHERE peer = ? AND key = ?");
  }

  put(peer: string, rows: readonly OutboxRow[], remove: readonly string[] = []): void {
    if (rows.length === 0 && remove.length === 0) return;
    this.db.transaction(() => {
      for (const k of remove) this.del.run(peer, k);
      for (const r of rows) this.ins.run(peer, r.key, r.body);
    })();
  }

  remove(peer: string, keys: readonly string[]): void {
    if (keys.length === 0) return;
    this.db.transaction(() => {
      for (const k of keys) this.del.run(peer, k);
    })();
  }

  list(peer: string): OutboxRow[] {
    return (this.sel.all(peer) as { key: string; body: Uint8Array }[]).map((r) => ({ key: r.key, body: new Uint8Array(r.body) }));
  }

  get(peer: string, keys: readonly string[]): OutboxRow[] {
    const out: OutboxRow[] = [];
    for (const key of keys) {
      const r = this.one.get(peer, key) as { body: Uint8Array } | null;
      if (r !== null) out.push({ key, body: new Uint8Array(r.body) });
    }
    return out;
  }

  peers(): string[] {
    return (this.db.query("SELECT DISTINCT peer FROM outbox ORDER BY peer").all() as { peer: string }[]).map((r) => r.peer);
  }

  count(peer?: string): number {
    const q = peer === undefined ? this.db.query("SELECT count(*) AS n FROM outbox").get() : this.db.query("SELECT count(*) AS n FROM outbox WHERE peer = ?").get(peer);
    return (q as { n: number }).n;
  }

  close(): void {
    this.db.close();
  }
}

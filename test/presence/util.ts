/**
 * Helpers of the presence tests (not a test file): iq over a raw connection,
 * the presence frames a connection received, and SQLite change counters of
 * every file of a data directory (PRAGMA data_version, read through a
 * connection of the test's own: it changes when any other connection commits).
 */
import { Database } from "bun:sqlite";
import { readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import type { Pst, Res, ServerStanza } from "../../src/protocol/stanzas.ts";
import type { RawConn } from "../helpers/harness.ts";

let iqId = 1;
/** One iq and its answer. */
export async function iq(c: RawConn, op: string, a?: Record<string, unknown>): Promise<Res> {
  const id = iqId++;
  c.send(a === undefined ? { t: "iq", id, op } : { t: "iq", id, op, a });
  return (await c.expect((s) => s.t === "res" && s.id === id)) as Res;
}

/** An iq that must succeed; its result. */
export async function ok<T = Record<string, unknown>>(c: RawConn, op: string, a?: Record<string, unknown>): Promise<T> {
  const r = await iq(c, op, a);
  if (!r.ok) throw new Error(`${op} ${JSON.stringify(a)} failed: ${r.e} ${r.m}`);
  return (r.r ?? {}) as T;
}

export const psts = (c: RawConn, about?: string): Pst[] =>
  c.received.filter((s: ServerStanza): s is Pst => s.t === "pst" && (about === undefined || (s as Pst).u === about));

/** Every SQLite file of a data directory, with its own read-only connection. */
export class ChangeCounters {
  private dbs: [string, Database][] = [];

  constructor(dataDir: string, keep: (file: string) => boolean = () => true) {
    // lock.db is held locked by the server for its life (src/store/lock.ts): it holds no data.
    const files = readdirSync(dataDir).filter((f) => f.endsWith(".db") && f !== "lock.db" && keep(f)).map((f) => join(dataDir, f));
    const q = join(dataDir, "queues");
    if (existsSync(q)) files.push(...readdirSync(q).filter((f) => f.endsWith(".db")).map((f) => join(q, f)));
    for (const f of files) this.dbs.push([f, new Database(f, { readonly: true })]);
  }

  /** file -> data_version now. */
  read(): Record<string, number> {
    const r: Record<string, number> = {};
    for (const [f, db] of this.dbs) r[f] = (db.query("PRAGMA data_version").get() as { data_version: number }).data_version;
    return r;
  }

  files(): string[] {
    return this.dbs.map(([f]) => f);
  }

  close(): void {
    for (const [, db] of this.dbs) db.close();
  }
}

/** Rows of a device's queue in every shard file. */
export function queuedFor(dataDir: string, account: string): { n: number; fromAccounts: string[] } {
  const q = join(dataDir, "queues");
  let n = 0;
  const from: string[] = [];
  for (const f of readdirSync(q).filter((x) => x.endsWith(".db"))) {
    const db = new Database(join(q, f), { readonly: true });
    try {
      const rows = db.query("SELECT from_account FROM items WHERE account = ?").all(account) as { from_account: string }[];
      n += rows.length;
      from.push(...rows.map((r) => r.from_account));
    } finally {
      db.close();
    }
  }
  return { n, fromAccounts: from };
}

/**
 * What a feature module is. A module's `start` returns its registrations as
 * data (ejabberd): stanza handlers, iq handlers and hooks. The loader keeps
 * that list, so unloading removes exactly what was added and a module can
 * never forget to unhook. Core never imports a module; the module list is
 * handed to core by whoever starts the server.
 */
import type { ClientStanza } from "../protocol/stanzas.ts";
import type { ErrorCode } from "../protocol/errors.ts";
import type { Conn } from "../transport/connection.ts";
import type { QueueItem } from "../store/queue.ts";
import type { CloseReason } from "../protocol/errors.ts";
import type { ModuleContext } from "./context.ts";
import type { Database } from "bun:sqlite";

/** Stanza kinds a module may handle once a session is ready (the rest belong to core). */
export type ModuleStanzaKind = "msg" | "gmsg" | "read" | "pres" | "call";
type StanzaOf<K extends ClientStanza["t"]> = Extract<ClientStanza, { t: K }>;

/** An iq answer. `x` carries details of a failure where the code has them (e.g. `rate_limited`: `{retry_ms}`). */
export type IqReply = { ok: true; r?: unknown } | { ok: false; e: ErrorCode; m: string; x?: Record<string, unknown> };

/** Named events with their arguments. Returning `true` from a handler stops the chain. */
export interface HookArgs {
  /** A device acknowledged a queue item. */
  "delivery:acked": [item: QueueItem, conn: Conn];
  /** An item expired unread (retention); its device has been sent a gap notice. */
  "delivery:expired": [item: QueueItem];
  "session:ready": [conn: Conn];
  "session:closed": [conn: Conn, reason: CloseReason];
  "device:added": [account: string, device: number];
  "device:revoked": [account: string, device: number];
  /**
   * An account was deleted (an operator's act). Run by core after it has revoked the account's
   * devices and dropped their queues, so nothing a handler queues can reach them. Every module
   * drops what it keeps of the account; the account's name stays reserved for queue.retention (AccountStore.deleteAccount).
   */
  "account:deleted": [account: string];
  /** A `read` whose conversation is a group id (the messaging module hands those on; the groups module takes them). */
  "read:group": [conn: Conn, stanza: StanzaOf<"read">];
  /** May `check.from` do `check.kind` towards `check.to`? A module that says no sets `check.refuse` (Hooks.check runs it). */
  "contact:check": [check: ContactCheck];
  /** Cluster mode: a presence item from peer node `from` (what the presence module sent with ctx.peers.send there). */
  "peer:presence": [from: string, body: unknown];
  /** Cluster mode: a home shard moves (docs/CLUSTER.md "Moving shards"); each module exports, imports or drops its rows of these accounts. */
  "shard:rows": [o: ShardRows];
}

/**
 * A shard move's question to every module about the shard's accounts: `export` puts the module's rows under
 * `out[its name]` (plain values: they cross the node link as msgpack); `import` (on the new home) replaces what is
 * here of those accounts with `rows[its name]`; `drop` (on the old home, after the flip) deletes them.
 */
export type ShardRows = (
  /**
   * One page of a shard's export (cluster/chunks.ts): `accounts` are that page's; rows keyed by something else (a
   * group id) go in pages of the module's own, its `page`-th now, and it sets `more` while it has pages left.
   * Rows are plain `{ table: rows[] }`; the import may get them cut over several calls, in this order.
   */
  | { op: "export"; accounts: readonly string[]; out: Record<string, unknown>; page?: number; more?: boolean }
  | { op: "import"; accounts: readonly string[]; rows: Record<string, unknown> }
  | { op: "drop"; accounts: readonly string[] }
) & {
  /** Whether a name (an account, a group id) hashes to the moving shard: for rows keyed by something else than these accounts. */
  inShard: (name: string) => boolean;
};

/**
 * The usual `shard:rows` handler: every row of `tables` ([table, the column naming the account]) of the module's
 * database `db` whose account is one of the moving ones, under `key`. Import and drop run in one transaction.
 * An import replaces the rows of `accounts` (deleted first) and writes the rows it brings, which may be of
 * accounts replaced by an earlier import of the same move (a shipment in chunks): INSERT OR REPLACE on the
 * table's key, so an import done twice writes nothing twice.
 */
export function accountTables(db: Database, key: string, tables: readonly (readonly [string, string])[], o: ShardRows): void {
  if (o.op === "export") {
    const out: Record<string, Record<string, unknown>[]> = {};
    for (const [t, c] of tables) {
      const q = db.query<Record<string, unknown>, [string]>(`SELECT * FROM ${t} WHERE ${c} = ?`);
      out[t] = o.accounts.flatMap((a) => q.all(a));
    }
    o.out[key] = out;
    return;
  }
  if (o.op === "import" && o.rows[key] === undefined && o.accounts.length === 0) return;
  const rows = o.op === "import" ? ((o.rows[key] ?? {}) as Record<string, Record<string, unknown>[]>) : {};
  db.transaction(() => {
    for (const [t, c] of tables) {
      const del = db.query(`DELETE FROM ${t} WHERE ${c} = ?`);
      for (const a of o.accounts) del.run(a);
      for (const r of rows[t] ?? []) {
        const cols = Object.keys(r);
        db.query(`INSERT OR REPLACE INTO ${t} (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`).run(...(Object.values(r) as never[]));
      }
    }
  }).immediate();
}

/** The accounts an import or drop of `accountTables` touched: those replaced and those whose rows it brought. */
export function touchedAccounts(key: string, tables: readonly (readonly [string, string])[], o: ShardRows): string[] {
  const out = new Set(o.accounts);
  const rows = o.op === "import" ? ((o.rows[key] ?? {}) as Record<string, Record<string, unknown>[]>) : {};
  for (const [t, c] of tables) for (const r of rows[t] ?? []) out.add(r[c] as string);
  return [...out];
}

/**
 * One question of the acceptance path to whichever module keeps the rules
 * between accounts (the presence module: blocks, strangers); core and the
 * asking module know only the answer. `msg`: a 1:1 message; `invite`: adding
 * `to` to a group; `receipt`: a `dlv` receipt from `from` (the recipient) to
 * `to` (the sender); `read`: a `read` receipt from `from` (the reader) to `to`.
 * `refuse`: `blocked` (refuse, with `m` for the sender), `limited` (drop:
 * rate-limited towards a stranger), `failed` (a handler crashed: the rule
 * could not be asked, so the act is refused as if it were barred — the check
 * fails closed; Hooks.check sets it, with `m`).
 */
export interface ContactCheck {
  kind: "msg" | "invite" | "receipt" | "read";
  from: string;
  to: string;
  refuse?: "blocked" | "limited" | "failed";
  m?: string;
  /**
   * Set by a handler whose answer (this one, refusal or not) holds until it reports a change with
   * ctx.facts.changed(): core may then keep it on the asking connection (src/core/facts.ts). Left unset by an
   * answer that depends on anything else (a rate limit, the clock); cleared before each handler. On the answer
   * Hooks.verdict returns, whether every handler that ran set it.
   */
  cacheable?: boolean;
}
export type HookName = keyof HookArgs;

export type Registration =
  | { [K in ModuleStanzaKind]: { stanza: K; handle: (conn: Conn, stanza: StanzaOf<K>) => void } }[ModuleStanzaKind]
  | { iq: string; handle: (conn: Conn, args: Record<string, unknown>) => IqReply | Promise<IqReply> }
  | { [H in HookName]: { hook: H; priority?: number; handle: (...args: HookArgs[H]) => boolean | void } }[HookName];

/** `Options`: the type of the module's config block (`ctx.options`). */
export interface Module<Options = any> {
  /** Also the module's folder name and its config key. */
  name: string;
  version: string;
  start(ctx: ModuleContext<Options>): Registration[];
  stop?(): void;
  /** State to carry across a hot reload (Prosody's module.save/restore). */
  save?(): unknown;
  restore?(state: unknown): void;
}

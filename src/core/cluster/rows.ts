/**
 * The rows of one home shard, taken from the node that owns it and written on the node it moves to
 * (`switchboard cluster move`, node.ts `move`). What a shard's accounts have in core's stores goes:
 * - accounts.db: the accounts, their devices (revoked ones too: their keys stay refused), enrollment codes, the
 *   names deleted and still reserved (their tombstones: the name is not taken again, the tickets not taken), and
 *   the sequence bounds of the conversations the shard numbers (a 1:1 conversation is numbered at the home of
 *   its lower name, a group's at the group's home): the target's allocator continues above the bound, so no
 *   number is issued twice;
 * - the delivery queues of the accounts' devices (committed and buffered items, in drain order; each gets a
 *   queue id of the target's, its `q` rewritten), and the durable acceptance records of the accounts as senders
 *   (a resend after the move is answered with the original `sent`).
 * - the modules' rows, through the `shard:rows` hook: of the accounts (keys, presence, read markers, push
 *   endpoints) and of the groups whose id hashes to the shard (groups).
 *
 * Import is idempotent: the items go in under one acceptance whose record is keyed by the move (first account,
 * device 0, `move:<from>:<epoch>`), so a shipment the link sends again after a restart of the target finds it
 * (`recall`) and queues nothing twice; the link acks only once everything is durable.
 */
import { decodeBody, encodeBody } from "../../protocol/codec.ts";
import type { AccountRows } from "../../store/accounts.ts";
import type { AcceptedRecord, QueueItem } from "../../store/queue.ts";
import type { PushJobRow, PushLimitRow } from "../../store/push.ts";
import type { Local } from "./forward.ts";
import type { ForwardedCopy } from "../accept.ts";
import { shardOf } from "./shards.ts";
import type { PeerOutbox } from "../../store/outbox.ts";
import type { LinkItem } from "./link.ts";
import { log } from "../log.ts";

/** The modules' rows of a chunk: module → table → rows (core/module.ts accountTables). */
export type ModuleRows = Record<string, Record<string, Record<string, unknown>[]>>;

/** One chunk of a shard's shipment (chunks.ts): every kind of row, a bounded number of bytes of them. */
export interface ShardData {
  shard: number;
  /** The exporting node, a random id of the attempt and `#<chunk>`, with the epoch it held the shard at: the import's idempotency key. */
  from: string;
  epoch: number;
  /** The account whose device 0 holds the chunk's import record (the shard's first account); null: the shard has none (no items either). */
  key: string | null;
  /** The accounts whose account row this chunk carries: their rows here, and the modules', are replaced by what comes. */
  names: string[];
  rows: AccountRows;
  items: QueueItem[];
  records: AcceptedRecord[];
  /**
   * A first shipment of a move: what the target has queued for the devices whose rows the chunk carries is dropped
   * first (rows a move that failed before its flip left there; they would double a later move's). False for the
   * leftovers after the flip.
   */
  replace: boolean;
  /** Core's push jobs of these devices (open or done), before their items, which collapse into them; in the leftovers only those that changed since. */
  jobs: PushJobRow[];
  /** The push limits of these devices (silent interval, alert bucket): a moved device keeps them; none in the leftovers. */
  limits: PushLimitRow[];
  modules: ModuleRows;
}

/** The account of a conversation key that numbers it: the lower name of a 1:1 pair (SeqAllocator.conv), else the key (a group id). */
export function numberingAccount(conv: string): string {
  const z = conv.indexOf("\u0000");
  return z < 0 ? conv : conv.slice(0, z);
}

/**
 * Writes one chunk here; resolves once it is durable (then the link acks it). A chunk imported before (a link
 * retry after a restart here) is recognised by its record and skipped whole: the record commits with the items,
 * after the rows and module rows were written (each in its own transaction, replacing, so an import cut short
 * by a kill -9 is simply done again).
 */
export function importShard(d: ShardData, local: Local): Promise<void> {
  const { accounts, queue, seqs, hooks } = local;
  const key = d.key === null ? null : { sender: d.key, device: 0, cid: `move:${d.from}:${d.epoch}`, to: "", seq: 0, ts: Date.now() };
  if (key !== null && queue.recall(key.sender, key.device, key.cid) !== null) return Promise.resolve(); // imported before (a link retry)
  accounts.importRows(d.rows);
  // A resume reads no accounts.db (Directory.loginChangedAt): the revokes, deletions and disables of the rows that came.
  const moved = new Set<string>();
  for (const r of d.rows.accounts) moved.add(r.name as string);
  for (const r of d.rows.devices) moved.add(r.account as string);
  for (const r of d.rows.tombstones ?? []) moved.add(r.name); // a deleted account's tickets are refused here too
  for (const a of moved) local.directory.reloadLogins(a);
  if (Object.keys(d.modules).length > 0 || d.names.length > 0) hooks.run("shard:rows", { op: "import", accounts: d.names, rows: d.modules, inShard: (n) => shardOf(n) === d.shard });
  for (const r of d.rows.seqs) seqs.forget(r.conv);
  if (d.replace) for (const dv of d.rows.devices as { account: string; device: number }[]) queue.dropDevice(dv.account, dv.device);
  // Before the items: their commit then collapses into the moved jobs (a wake-up sent at the old home is not sent again).
  if (d.jobs.length > 0) local.push.jobs.putJobs(d.jobs);
  if (d.limits.length > 0) local.push.adoptLimits(d.limits);
  if (key === null) return Promise.resolve();
  const waits: Promise<void>[] = [];
  for (const rec of d.records) {
    if (queue.recall(rec.sender, rec.device, rec.cid) !== null) continue;
    waits.push(new Promise((resolve) => queue.release(queue.begin(rec, resolve))));
  }
  waits.push(new Promise((resolve) => {
    const acc = queue.begin(key, resolve);
    // In drain order per device: fresh ids keep it (they only grow).
    for (const it of d.items) {
      const qid = queue.nextQid(it.account);
      const body = decodeBody(it.body) as Record<string, unknown>;
      body.q = qid;
      queue.append({ ...it, qid, body: encodeBody(body) }, acc);
    }
    queue.release(acc);
  }));
  queue.flush();
  return Promise.all(waits).then(() => {});
}

type Relayable = { k: "m"; r: AcceptedRecord; c: ForwardedCopy[] } | { k: "d"; a: string } | { k: string };

/**
 * A peer's `m` or `d` item for accounts whose home moved away from here after the peer chose this node (it had
 * not heard of the move yet): the copies of those accounts go on to their new home, with the item's key (so the
 * new home's dedup is the one that counts), and the peer's batch is acked once the new home acked them. Null when
 * nothing in the item moved; else what is left to handle here (null: nothing).
 */
export function relayMoved(
  it: Relayable, key: string, body: Uint8Array, here: string, homeOf: (a: string) => string, send: (node: string, key: string, body: Uint8Array) => Promise<void>,
  held: (account: string) => Promise<void> | null, again: () => Promise<void> | void,
): { wait: Promise<void>; rest: Relayable | null } | null {
  // For an account whose shard is moving away from here just now: held (not acked, so its sender's `sent` waits)
  // until the flip, then handled again, which relays it to the new home. Queued here, it would reach the new home
  // only with the leftovers, behind what its sender sent after this one's `sent` (drain.test.ts saw that reorder).
  const accounts = it.k === "d" ? [(it as { a: string }).a] : it.k === "m" ? (it as { c: ForwardedCopy[] }).c.map((c) => c[0]) : [];
  for (const a of accounts) {
    const h = held(a);
    if (h !== null) return { wait: h.then(() => again()).then(() => {}), rest: null };
  }
  if (it.k === "d") {
    const home = homeOf((it as { a: string }).a);
    return home === here ? null : { wait: send(home, key, body), rest: null };
  }
  if (it.k !== "m") return null;
  const m = it as Extract<Relayable, { k: "m" }>;
  const away = new Map<string, ForwardedCopy[]>();
  const rest: ForwardedCopy[] = [];
  for (const c of m.c) {
    const home = homeOf(c[0]);
    if (home === here) rest.push(c);
    else (away.get(home) ?? away.set(home, []).get(home)!).push(c);
  }
  if (away.size === 0) return null;
  const waits: Promise<void>[] = [];
  for (const [node, copies] of away) waits.push(send(node, rest.length === 0 && away.size === 1 ? key : `${key}\u0000${node}`, copies.length === m.c.length ? body : encodeBody({ ...m, c: copies })));
  return { wait: Promise.all(waits).then(() => {}), rest: rest.length === 0 ? null : { ...m, c: rest } };
}

/**
 * What this node kept (its outbox) for a peer that is no longer in cluster.nodes, a removed node (docs/CLUSTER.md
 * "Removing a node") that stopped before it acked them: e.g. a receipt sent to it after its drain's last ack by a node
 * that had not heard of the flip yet, which the removed node, were it back, would relay to the new home. Nobody
 * sends them to it any more, so each is handled here as it would have been there (`handle`: the link's receiving
 * path, which relays an item to its accounts' home, relayMoved, or queues it here for accounts homed here), and
 * its rows go once that is durable (a kill -9 before: done again at the next start, deduplicated by key). Run once
 * the homes are read (node.ts start). Returns the number of rows.
 */
export function rehomeKept(outbox: PeerOutbox | null, self: string, peers: readonly string[], handle: (peer: string, items: LinkItem[]) => Promise<void> | void): number {
  let n = 0;
  for (const p of outbox?.peers() ?? []) {
    if (p === self || peers.includes(p)) continue;
    const rows = outbox!.list(p);
    n += rows.length;
    log.info("cluster: items kept for a node no longer in cluster.nodes, handed to their accounts' homes", { peer: p, items: rows.length });
    void Promise.resolve(handle(p, rows.map((r): LinkItem => [r.key, r.body])))
      .then(() => outbox!.remove(p, rows.map((r) => r.key)))
      .catch((e) => log.warn("cluster: items kept for a removed node not handed on; kept for the next start", { peer: p, error: String(e) }));
  }
  return n;
}

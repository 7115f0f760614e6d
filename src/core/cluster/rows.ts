/**
 * The rows of one home shard, taken from the node that owns it and written on the node it moves to
 * (`switchboard cluster move`, node.ts `move`). What a shard's accounts have in core's stores goes:
 * - accounts.db: the accounts, their devices (revoked ones too: their keys stay refused), enrollment codes, and
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

export interface ShardData {
  shard: number;
  /** The exporting node and the epoch it held the shard at: the import's idempotency key. */
  from: string;
  epoch: number;
  names: string[];
  rows: AccountRows;
  items: QueueItem[];
  records: AcceptedRecord[];
  /**
   * The first shipment of a move: what the target has queued for these devices is replaced (rows a move that
   * failed before its flip left there; they would double a later move's). False for the leftovers after the flip.
   */
  replace: boolean;
  /**
   * Core's push jobs of these devices (open or done: a pending wake-up, or the stage it reached), in the first
   * chunk; in the leftovers only if they changed since. Imported before the items, which collapse into them.
   */
  jobs?: PushJobRow[];
  /** The push limits of these devices (silent interval, alert bucket), in the first chunk: a moved device keeps them. */
  limits?: PushLimitRow[];
  /** The modules' rows of these accounts (the `shard:rows` hook), by module; absent in the leftovers. */
  modules?: Record<string, unknown>;
}

const PAGE = 1000;

/** The account of a conversation key that numbers it: the lower name of a 1:1 pair (SeqAllocator.conv), else the key (a group id). */
export function numberingAccount(conv: string): string {
  const z = conv.indexOf("\u0000");
  return z < 0 ? conv : conv.slice(0, z);
}

/** `names`: the shard's accounts here, if the caller has them (one scan of all accounts for many shards). */
export function exportShard(shard: number, from: string, epoch: number, local: Local, shardCount: number, names = local.accounts.listAccounts().filter((n) => shardOf(n, shardCount) === shard)): ShardData {
  const { accounts, queue, hooks } = local;
  const rows = accounts.exportRows(names, (c) => shardOf(numberingAccount(c), shardCount) === shard);
  const items: QueueItem[] = [];
  for (const d of rows.devices as { account: string; device: number }[]) {
    for (let after = 0; ; ) {
      const page = queue.fetch(d.account, d.device, after, PAGE);
      items.push(...page);
      if (page.length < PAGE) break;
      after = page[page.length - 1]!.qid;
    }
  }
  const modules: Record<string, unknown> = {};
  hooks.run("shard:rows", { op: "export", accounts: names, out: modules, inShard: (n) => shardOf(n, shardCount) === shard });
  const devices = rows.devices as { account: string; device: number }[];
  const jobs = local.push.jobs.jobsOf(devices);
  return { shard, from, epoch, names, rows, items, records: queue.recordsOf(names), replace: true, modules, jobs, limits: local.push.jobs.limitsOf(devices) };
}

/** A shipment cut to fit a link frame: its encoded size (an upper bound) and its place in its shard's order. */
export interface Chunk { d: ShardData; bytes: number; index: number }

/** The array header of a chunk's items grows from 1 byte (empty) to at most 5: counted once per chunk. */
const ARRAY_SLACK = 8;
const NO_ROWS = (): AccountRows => ({ accounts: [], devices: [], codes: [], seqs: [] });

/**
 * A shard's shipment in chunks of at most `bytes` each (one over it only when a single item is): one `S` item
 * per shard stopped fitting in a link frame (HARD_MAX_FRAME, 16 MiB) above about 16 MiB of queued bodies. The
 * first chunk carries the rows, the acceptance records and the modules' rows (and replaces, if the shipment
 * does); the others only items, in drain order, each under its own import key (`<from>#<i>`), so that a link
 * retry of one of them is recognised by itself. The mover sends chunk i+1 only after chunk i is durable there.
 */
export function chunkShard(d: ShardData, bytes: number): Chunk[] {
  const out: Chunk[] = [];
  let items: QueueItem[] = [];
  let size = encodeBody({ ...d, items: [] }).length + ARRAY_SLACK;
  const rest = (i: number, its: QueueItem[]): ShardData => ({ shard: d.shard, from: `${d.from}#${i}`, epoch: d.epoch, names: d.names, rows: NO_ROWS(), items: its, records: [], replace: false });
  const cut = () => {
    const index = out.length;
    out.push({ d: index === 0 ? { ...d, items } : rest(index, items), bytes: size, index });
    items = [];
    size = encodeBody(rest(index + 1, [])).length + ARRAY_SLACK;
  };
  for (const it of d.items) {
    // Encoded once more to be measured: exact (an estimate from the fields fell short by a few bytes per item, and
    // the cut must hold), and a move is rare; it costs about what the shipment's own encoding does.
    const n = encodeBody(it).length;
    if (items.length > 0 && size + n > bytes) cut();
    items.push(it);
    size += n;
  }
  cut();
  return out;
}

/** Writes a shipment here; resolves once it is durable (then the link acks it). */
export function importShard(d: ShardData, local: Local): Promise<void> {
  const { accounts, queue, seqs, hooks } = local;
  accounts.importRows(d.rows);
  if (d.modules !== undefined) hooks.run("shard:rows", { op: "import", accounts: d.names, rows: d.modules, inShard: (n) => shardOf(n) === d.shard });
  for (const r of d.rows.seqs) seqs.forget(r.conv);
  if (d.names.length === 0) return Promise.resolve();
  const key = { sender: d.names[0]!, device: 0, cid: `move:${d.from}:${d.epoch}`, to: "", seq: 0, ts: Date.now() };
  if (queue.recall(key.sender, key.device, key.cid) !== null) return Promise.resolve(); // imported before (a link retry)
  if (d.replace) for (const dv of d.rows.devices as { account: string; device: number }[]) queue.dropDevice(dv.account, dv.device);
  // Before the items: their commit then collapses into the moved jobs (a wake-up sent at the old home is not sent again).
  if (d.jobs !== undefined) local.push.jobs.putJobs(d.jobs);
  if (d.limits !== undefined) local.push.adoptLimits(d.limits);
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

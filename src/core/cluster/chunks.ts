/**
 * A moving shard's rows as a stream, cut into chunks (move.ts `ship`): every kind of row is chunked, not only the
 * queued items, and the stream is read from the stores as the chunks go, so neither the frame (HARD_MAX_FRAME,
 * 16 MiB) nor the mover's memory bounds the size of a shard that can move.
 *
 * `shardParts` reads one shard's rows in pages: its sequence bounds (seqsAfter, SEQ_PAGE at a time), then per page
 * of ACCOUNT_PAGE accounts their account, device and code rows, their acceptance records, the modules' rows
 * (`shard:rows` export of that page; groups page their own ids, `more`), their push jobs and limits, and their devices' items
 * (ITEM_PAGE at a time, drain order). An account's row comes before its devices', module rows and items, and a
 * device's job before its items: the import (rows.ts) replaces an account's rows, and a device's queue, in the chunk
 * that carries its row, before what later chunks add to them. `chunkRows` packs the parts into chunks of at most
 * `limit` encoded bytes (one over it only when a single part is), each a ShardData under its own import key.
 *
 * Memory: one page of rows (one page of accounts' records and module rows; a single account's rows, or a group's
 * messages, are read whole), ITEM_PAGE items, the chunk being filled, and the ledger (a few numbers per device).
 */
import { encodeBody } from "../../protocol/codec.ts";
import type { AccountRows, AccountStore, Tombstone } from "../../store/accounts.ts";
import type { AcceptedRecord, DeliveryQueue, QueueItem } from "../../store/queue.ts";
import type { PushJobRow, PushJobStore, PushLimitRow } from "../../store/push.ts";
import type { Hooks } from "../hooks.ts";
import { numberingAccount, type ModuleRows, type ShardData } from "./rows.ts";
import { shardOf } from "./shards.ts";

/** Accounts per page of the export: their records and module rows are held together. */
export const ACCOUNT_PAGE = 128;
const SEQ_PAGE = 1000;
/** Items read at once: bodies can be up to a frame each, so few. */
const ITEM_PAGE = 16;

/** One row of a shipment, in the order it must be imported. */
export type Part =
  | { k: "accounts" | "devices" | "codes"; r: Record<string, unknown> }
  | { k: "seqs"; r: { conv: string; hi: number } }
  | { k: "tombstones"; r: Tombstone }
  | { k: "records"; r: AcceptedRecord }
  | { k: "jobs"; r: PushJobRow }
  | { k: "limits"; r: PushLimitRow }
  | { k: "items"; r: QueueItem }
  | { k: "module"; m: string; t: string; r: Record<string, unknown> };

/** A chunk: its encoded size (an upper bound) and its place in its shard's order. */
export interface Chunk { d: ShardData; bytes: number; index: number }

/** What a shipment is: the shard, the attempt (`from`, the import key's stem), the epoch, the account of the import records. */
export interface Head { shard: number; from: string; epoch: number; key: string | null; replace: boolean }

/** Where a shard's rows are read. */
export interface Stores { accounts: AccountStore; queue: DeliveryQueue; hooks: Hooks; jobs: PushJobStore; shardCount: number }

/** What an export remembers for the leftovers after the flip: the shard's devices, the last item shipped of each, their jobs as shipped. */
export interface Ledger { devices: { account: string; device: number }[]; last: Map<string, number>; jobs: Map<string, string>; shipped: number }
export const newLedger = (): Ledger => ({ devices: [], last: new Map(), jobs: new Map(), shipped: 0 });
const dk = (a: string, d: number) => `${a}\u0000${d}`;

/**
 * A ledger as text, kept with the move's intent (homes.ts `intend`, durably before the flip) with the attempt and the
 * import record's account: a mover killed after its flip ships its leftovers at its restart under the same keys
 * (what the target imported already is skipped). A few dozen bytes per device, a job's row more.
 */
export const ledgerNote = (from: string, key: string | null, l: Ledger): string =>
  JSON.stringify({ from, key, d: l.devices.map(({ account, device }) => [account, device, l.last.get(dk(account, device)) ?? 0, l.jobs.get(dk(account, device)) ?? null]) });
export function readNote(note: string): { from: string; key: string | null; ledger: Ledger } {
  const o = JSON.parse(note) as { from: string; key: string | null; d: [string, number, number, string | null][] };
  const ledger = newLedger();
  for (const [account, device, last, job] of o.d) {
    ledger.devices.push({ account, device });
    ledger.last.set(dk(account, device), last);
    if (job !== null) ledger.jobs.set(dk(account, device), job);
  }
  return { from: o.from, key: o.key, ledger };
}

/** A msgpack array or map header grows from 1 byte to at most 5: counted once per array a chunk has. */
const HEADER_SLACK = 5;
/**
 * An item's encoded size: the item without its body, encoded, plus the body and its bin header (at most 5 bytes).
 * Not the body encoded once more: for a shard of big bodies that doubled what a move allocated (18 MiB more
 * garbage for 18 MiB queued).
 */
const NO_BODY = new Uint8Array(0);
const itemBytes = (it: QueueItem): number => encodeBody({ ...it, body: NO_BODY }).length + it.body.length + 4;
/** A string's encoded size, header included (at most 5 bytes). */
const str = (x: unknown): number => Buffer.byteLength(String(x)) + 5;
const NO_ROWS = (): AccountRows => ({ accounts: [], devices: [], codes: [], seqs: [], tombstones: [] });

/**
 * Packs `parts` into chunks of at most `limit` bytes as encoded (encodeBody, what the link sends): each row is
 * encoded once more to be measured (an item without its body: `itemBytes`), exact where an estimate from the fields
 * fell a few bytes per item short (chunks.test.ts); a move is rare. Chunk i's import
 * key is `<from>#<i>` (a link retry of one is recognised by itself); every chunk of a first shipment replaces
 * (`replace`) the queues of the devices whose rows it carries.
 */
export function* chunkRows(h: Head, parts: Iterable<Part>, limit: number): Generator<Chunk> {
  let index = 0;
  let d: ShardData;
  let size = 0;
  let count = 0;
  const open = () => {
    d = { shard: h.shard, from: `${h.from}#${index}`, epoch: h.epoch, key: h.key, names: [], rows: NO_ROWS(), items: [], records: [], jobs: [], limits: [], modules: {}, replace: h.replace };
    size = encodeBody(d).length + 9 * HEADER_SLACK; // names, the four row arrays, items, records, jobs, limits
    count = 0;
  };
  const cut = (): Chunk => ({ d, bytes: size, index: index++ });
  open();
  for (const p of parts) {
    let n = p.k === "items" ? itemBytes(p.r) : encodeBody(p.r).length;
    if (p.k === "module") {
      const m = d!.modules[p.m];
      if (m === undefined) n += str(p.m) + HEADER_SLACK;
      if (m?.[p.t] === undefined) n += str(p.t) + 2 * HEADER_SLACK;
    } else if (p.k === "accounts") n += str(p.r.name);
    if (count > 0 && size + n > limit) {
      yield cut();
      open();
      if (p.k === "module") n += str(p.m) + str(p.t) + 3 * HEADER_SLACK; // recount: the new chunk has neither key
    }
    count++;
    size += n;
    if (p.k === "module") ((d!.modules[p.m] ??= {})[p.t] ??= []).push(p.r);
    else if (p.k === "items") d!.items.push(p.r);
    else if (p.k === "records") d!.records.push(p.r);
    else if (p.k === "jobs") d!.jobs.push(p.r);
    else if (p.k === "limits") d!.limits.push(p.r);
    else if (p.k === "seqs") d!.rows.seqs.push(p.r);
    else if (p.k === "tombstones") d!.rows.tombstones.push(p.r);
    else {
      d!.rows[p.k].push(p.r);
      if (p.k === "accounts") d!.names.push(p.r.name as string);
    }
  }
  yield cut();
}

/** One shard's rows, read page by page as the chunks are taken (see the file's comment); notes the devices in `ledger`. */
export function* shardParts(shard: number, names: readonly string[], s: Stores, ledger: Ledger): Generator<Part> {
  const inShard = (n: string) => shardOf(n, s.shardCount) === shard;
  for (let after = ""; ; ) {
    const page = s.accounts.seqsAfter(after, SEQ_PAGE);
    for (const r of page) if (inShard(numberingAccount(r.conv))) yield { k: "seqs", r };
    if (page.length < SEQ_PAGE) break;
    after = page[page.length - 1]!.conv;
  }
  // The shard's deleted names still reserved: without them the new home let the name be taken again and took a
  // ticket of a deleted account's device (its keys came with the shard; the deletion did not).
  for (let after = ""; ; ) {
    const page = s.accounts.tombstonesAfter(after, SEQ_PAGE);
    for (const r of page) if (inShard(r.name)) yield { k: "tombstones", r };
    if (page.length < SEQ_PAGE) break;
    after = page[page.length - 1]!.name;
  }
  for (let p = 0, more = true; more || p * ACCOUNT_PAGE < names.length; p++) {
    const page = names.slice(p * ACCOUNT_PAGE, (p + 1) * ACCOUNT_PAGE);
    const rows = s.accounts.exportRows(page);
    for (const k of ["accounts", "devices", "codes"] as const) for (const r of rows[k]) yield { k, r };
    for (const r of s.queue.recordsOf(page)) yield { k: "records", r };
    const o = { op: "export" as const, accounts: page, out: {} as Record<string, unknown>, inShard, page: p, more: false };
    s.hooks.run("shard:rows", o);
    more = o.more;
    for (const [m, tables] of Object.entries(o.out)) {
      if (tables === null || typeof tables !== "object") throw new Error(`shard:rows export of ${m}: give { table: rows[] } (core/module.ts accountTables)`);
      for (const [t, rs] of Object.entries(tables as Record<string, unknown>)) {
        if (!Array.isArray(rs)) throw new Error(`shard:rows export of ${m}.${t}: give an array of rows (core/module.ts accountTables)`);
        for (const r of rs as Record<string, unknown>[]) yield { k: "module", m, t, r };
      }
    }
    const devices = rows.devices as { account: string; device: number }[];
    for (const r of s.jobs.jobsOf(devices)) {
      ledger.jobs.set(dk(r.account, r.device), JSON.stringify(r));
      yield { k: "jobs", r };
    }
    for (const r of s.jobs.limitsOf(devices)) yield { k: "limits", r }; // none in the leftovers: no push goes out for a frozen shard (PushService.owns)
    for (const { account, device } of devices) {
      ledger.devices.push({ account, device });
      let after = 0;
      for (;;) {
        const items = s.queue.fetch(account, device, after, ITEM_PAGE);
        for (const r of items) yield { k: "items", r };
        ledger.shipped += items.length;
        if (items.length > 0) after = items[items.length - 1]!.qid;
        if (items.length < ITEM_PAGE) break;
      }
      ledger.last.set(dk(account, device), after);
    }
  }
}

/**
 * After the flip: what was queued here for the shard's devices since their export (receipts, group copies and
 * events of others' activity; sends were refused), and their push jobs that changed since (a stage went out here).
 */
export function* leftoverParts(s: Stores, ledger: Ledger): Generator<Part> {
  for (const r of s.jobs.jobsOf(ledger.devices)) if (ledger.jobs.get(dk(r.account, r.device)) !== JSON.stringify(r)) yield { k: "jobs", r };
  for (const { account, device } of ledger.devices) {
    for (let after = ledger.last.get(dk(account, device)) ?? 0; ; ) {
      const items = s.queue.fetch(account, device, after, ITEM_PAGE);
      for (const r of items) yield { k: "items", r };
      if (items.length < ITEM_PAGE) break;
      after = items[items.length - 1]!.qid;
    }
  }
}

/** True when a chunk carries nothing (the leftovers of a quiet move). */
export const emptyChunk = (d: ShardData): boolean =>
  d.items.length === 0 && d.jobs.length === 0 && d.limits.length === 0 && d.records.length === 0 && d.names.length === 0 && d.rows.devices.length === 0 && d.rows.codes.length === 0 && d.rows.seqs.length === 0 && d.rows.tombstones.length === 0 && Object.keys(d.modules).length === 0;

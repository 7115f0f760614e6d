/**
 * Delivery traces: the life of recent messages, for an operator asking "what
 * happened to message X?" (`GET /trace`, `switchboard trace`). Metadata only:
 * who, when, which devices, never a payload.
 *
 * Bounded: a ring of the last `size` traced messages (one in `sample`), with
 * everything it indexes dropped when an entry falls out of the ring. Kept in
 * memory only: a restart starts with an empty ring, and an item acknowledged
 * after a restart is not matched to the trace of its acceptance.
 *
 * Who records what: the messaging module calls `accepted` (and `durable`,
 * `read`) through ServerContext.trace; Delivery records each copy as it is
 * queued, pushed, acknowledged or expired. Copies are matched to their
 * message without a lookup: Delivery.enqueue runs synchronously right after
 * `accepted`, so the message being traced is simply the last one accepted.
 * Later events find the copy by its queue id (a numeric Map key).
 *
 * Cost when on: an object per traced message and per copy, a Date.now() and
 * a Map lookup per push and per ack. `trace.size = 0` turns it off: then
 * Delivery gets no tracer at all, and the module calls return at once.
 */
import { ItemKind, type QueueItem } from "../store/queue.ts";

export interface TraceCopy {
  account: string;
  device: number;
  kind: "message" | "sync" | "group";
  q: number;
  queued: number;
  /** Each time the copy was written to one of the device's connections (redeliveries after a reconnect add more). */
  pushed: number[];
  acked: number | null;
  expired: number | null;
}

export interface TraceEntry {
  from: string;
  fd: number;
  id: string;
  /** The recipient account (or group id). */
  to: string;
  seq: number;
  accepted: number;
  /** When every copy and the acceptance record were durable (committed, or acknowledged before their commit): when `sent` went out. */
  durable: number | null;
  copies: TraceCopy[];
  /** The first read marker of the recipient that covered this message (which device, when). */
  read: { account: string; device: number; ts: number } | null;
}

const MAX_PUSHES = 16;
const KIND: Record<number, TraceCopy["kind"] | undefined> = { [ItemKind.MESSAGE]: "message", [ItemKind.SYNC]: "sync", [ItemKind.GROUP]: "group" };

export class Trace {
  private ring: (TraceEntry | undefined)[];
  private next = 0;
  private counter = 0;
  private current: TraceEntry | null = null;
  /** sender \0 device \0 client id -> entry. */
  private byKey = new Map<string, TraceEntry>();
  private byQid = new Map<number, { entry: TraceEntry; copy: TraceCopy }>();
  /** sender \0 recipient -> entries not yet covered by a read marker of the recipient, in acceptance order. */
  private unread = new Map<string, TraceEntry[]>();

  constructor(readonly size: number, readonly sample = 1) {
    if (!Number.isInteger(size) || size < 0) throw new Error(`Trace: size must be a non-negative integer, got ${size}`);
    if (!Number.isInteger(sample) || sample < 1) throw new Error(`Trace: sample must be a positive integer, got ${sample}`);
    this.ring = new Array(size);
  }

  get enabled(): boolean {
    return this.size > 0;
  }

  /** A message was accepted (it got its seq and ts). The copies queued next are matched to it. */
  accepted(from: string, fd: number, id: string, to: string, seq: number, ts: number): void {
    if (this.size === 0 || this.counter++ % this.sample !== 0) {
      this.current = null;
      return;
    }
    const e: TraceEntry = { from, fd, id, to, seq, accepted: ts, durable: null, copies: [], read: null };
    const old = this.ring[this.next];
    if (old !== undefined) this.evict(old);
    this.ring[this.next] = e;
    this.next = (this.next + 1) % this.size;
    this.byKey.set(`${from}\u0000${fd}\u0000${id}`, e);
    if (from !== to) {
      const k = `${from}\u0000${to}`;
      const list = this.unread.get(k);
      if (list === undefined) this.unread.set(k, [e]);
      else list.push(e);
    }
    this.current = e;
  }

  private evict(e: TraceEntry): void {
    const key = `${e.from}\u0000${e.fd}\u0000${e.id}`;
    if (this.byKey.get(key) === e) this.byKey.delete(key);
    for (const c of e.copies) if (this.byQid.get(c.q)?.entry === e) this.byQid.delete(c.q);
    if (e.read !== null || e.from === e.to) return; // a read marker took it off its list already
    const k = `${e.from}\u0000${e.to}`;
    const list = this.unread.get(k);
    if (list !== undefined) {
      const i = list[0] === e ? 0 : list.indexOf(e);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.unread.delete(k);
    }
  }

  /** Delivery queued a copy; it belongs to the message just accepted, if that one is traced. */
  enqueued(item: QueueItem): void {
    const e = this.current;
    if (e === null || item.cid !== e.id || item.fromAccount !== e.from || item.fromDevice !== e.fd || item.seq !== e.seq) return;
    const kind = KIND[item.kind];
    if (kind === undefined) return;
    const copy: TraceCopy = { account: item.account, device: item.device, kind, q: item.qid, queued: Date.now(), pushed: [], acked: null, expired: null };
    e.copies.push(copy);
    this.byQid.set(item.qid, { entry: e, copy });
  }

  pushed(qid: number): void {
    const t = this.byQid.get(qid);
    if (t !== undefined && t.copy.pushed.length < MAX_PUSHES) t.copy.pushed.push(Date.now());
  }

  acked(qid: number): void {
    const t = this.byQid.get(qid);
    if (t === undefined) return;
    t.copy.acked = Date.now();
    this.byQid.delete(qid);
  }

  expired(qid: number): void {
    const t = this.byQid.get(qid);
    if (t === undefined) return;
    t.copy.expired = Date.now();
    this.byQid.delete(qid);
  }

  /** The message is durable and its sender was told `sent`. */
  durable(from: string, fd: number, id: string): void {
    if (this.size === 0) return;
    const e = this.byKey.get(`${from}\u0000${fd}\u0000${id}`);
    if (e !== undefined && e.durable === null) e.durable = Date.now();
  }

  /** `reader` (on `device`) has read its conversation with `peer` up to `seq`. */
  read(reader: string, device: number, peer: string, seq: number): void {
    if (this.size === 0) return;
    const k = `${peer}\u0000${reader}`;
    const list = this.unread.get(k);
    if (list === undefined) return;
    // One direction of a conversation is accepted in seq order, so what a marker covers is a prefix of the list.
    const ts = Date.now();
    let n = 0;
    while (n < list.length && list[n]!.seq <= seq) list[n++]!.read = { account: reader, device, ts };
    if (n === list.length) this.unread.delete(k);
    else if (n > 0) list.splice(0, n);
  }

  /** Traced messages with client id `id` (from `from`, when given), newest first. */
  find(id: string, from?: string): TraceEntry[] {
    const out: TraceEntry[] = [];
    for (let i = 1; i <= this.size; i++) {
      const e = this.ring[(this.next - i + this.size) % this.size];
      if (e === undefined) break;
      if (e.id === id && (from === undefined || e.from === from)) out.push(e);
    }
    return out;
  }

  /** Entries held (for tests and the health of the ring). */
  get held(): number {
    return this.byKey.size;
  }
}

/**
 * Delivery traces: the life of recent messages, for an operator asking "what
 * happened to message X?" (`GET /trace`, `switchboard trace`). Metadata only:
 * who, when, which devices, never a payload.
 *
 * The write path is an append to a ring of events (accepted, copy queued,
 * pushed, acknowledged, expired, durable, read), stored in typed arrays and
 * three arrays of string references: no Map, no object and no string built
 * per event. All the work is at query time, a scan of the ring (a few
 * milliseconds for the default 60 000 events), which an operator does
 * rarely. A first version that kept indexed records per message cost 9-15 %
 * of the server's messages per CPU-second at saturation; this one is
 * measured in README ("Operations").
 *
 * Bounded: `size` messages' worth of events (about six per message). Kept in
 * memory only: a restart starts with an empty ring. Sampling (`sample` > 1)
 * keeps the messages whose client id hashes to 0 modulo `sample`, decided
 * from the id alone so that every event of a message agrees without a
 * lookup.
 *
 * Who records what: the messaging module calls `accepted`, `durable` and
 * `read` through ServerContext.trace; Delivery records each copy as it is
 * queued, pushed, acknowledged or expired. Copies are matched to their
 * message without a lookup: Delivery.enqueue runs synchronously right after
 * `accepted`, so the message being traced is the last one accepted, and its
 * copies' events follow its own in the ring. Later events of a copy carry
 * its queue id, account and device (queue ids are unique per shard only).
 */
import { ItemKind, type QueueItem } from "../store/queue.ts";

/** One copy of a message (to one device), as /trace shows it. */
export interface TraceCopy {
  account: string;
  device: number;
  kind: "message" | "sync" | "group";
  q: number;
  /** The first time the copy was written to one of the device's connections, and how often it was (redeliveries after reconnects). */
  pushed: number | null;
  pushes: number;
  acked: number | null;
  expired: number | null;
}

/** One message, as /trace shows it. Its copies are queued when it is accepted. */
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

const ACCEPT = 1; // s1 id, s2 from, s3 to, n seq, i fd
const QUEUED = 2; // s1 account, n qid, i device, k item kind
const PUSH = 3; // s1 account, n qid, i device
const ACK = 4;
const EXPIRE = 5;
const DURABLE = 6; // s1 id, s2 from, i fd
const READ = 7; // s1 reader, s2 peer, n seq, i device

/** Events kept per message of `size`: accept, a copy or two, push, ack, durable, now and then a read. */
const EVENTS_PER_MESSAGE = 6;

const KIND: Record<number, TraceCopy["kind"] | undefined> = { [ItemKind.MESSAGE]: "message", [ItemKind.SYNC]: "sync", [ItemKind.GROUP]: "group" };

/** FNV-1a of a client id: which messages a sampled trace keeps. Stable, so every event of a message agrees. */
export function traceHash(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class Trace {
  private cap: number;
  private at = 0; // next slot
  private count = 0; // events held (<= cap)
  private kind: Uint8Array;
  private ts: Float64Array;
  private n: Float64Array;
  private i: Int32Array;
  private k: Uint8Array;
  private s1: (string | undefined)[];
  private s2: (string | undefined)[];
  private s3: (string | undefined)[];
  /** The message whose copies are being queued right now (Delivery.enqueue follows `accepted` synchronously). */
  private cur: { id: string; from: string; fd: number; seq: number } | null = null;

  constructor(readonly size: number, readonly sample = 1) {
    if (!Number.isInteger(size) || size < 0) throw new Error(`Trace: size must be a non-negative integer, got ${size}`);
    if (!Number.isInteger(sample) || sample < 1) throw new Error(`Trace: sample must be a positive integer, got ${sample}`);
    this.cap = size * EVENTS_PER_MESSAGE;
    this.kind = new Uint8Array(this.cap);
    this.ts = new Float64Array(this.cap);
    this.n = new Float64Array(this.cap);
    this.i = new Int32Array(this.cap);
    this.k = new Uint8Array(this.cap);
    this.s1 = new Array(this.cap);
    this.s2 = new Array(this.cap);
    this.s3 = new Array(this.cap);
  }

  get enabled(): boolean {
    return this.size > 0;
  }

  private traced(id: string): boolean {
    return this.sample === 1 || traceHash(id) % this.sample === 0;
  }

  private push(kind: number, s1: string, s2: string | undefined, n: number, i: number, ts = Date.now()): number {
    const j = this.at;
    this.kind[j] = kind;
    this.ts[j] = ts;
    this.n[j] = n;
    this.i[j] = i;
    this.s1[j] = s1;
    this.s2[j] = s2;
    this.s3[j] = undefined;
    this.at = j + 1 === this.cap ? 0 : j + 1;
    if (this.count < this.cap) this.count++;
    return j;
  }

  /** A message was accepted (it got its seq and ts). The copies queued next are matched to it. */
  accepted(from: string, fd: number, id: string, to: string, seq: number, ts: number): void {
    if (this.size === 0 || !this.traced(id)) {
      this.cur = null;
      return;
    }
    const j = this.push(ACCEPT, id, from, seq, fd, ts);
    this.s3[j] = to;
    this.cur = { id, from, fd, seq };
  }

  /** Delivery queued a copy; it belongs to the message just accepted, if that one is traced. */
  enqueued(item: QueueItem): void {
    const c = this.cur;
    if (c === null || item.cid !== c.id || item.fromAccount !== c.from || item.fromDevice !== c.fd || item.seq !== c.seq) return;
    if (KIND[item.kind] === undefined) return;
    const j = this.push(QUEUED, item.account, undefined, item.qid, item.device);
    this.k[j] = item.kind;
  }

  /** Only copies of messages are traced (not receipts), and with sampling only those of sampled messages. */
  private copyEvent(kind: number, item: QueueItem): void {
    if (KIND[item.kind] === undefined || (this.sample !== 1 && !this.traced(item.cid))) return;
    this.push(kind, item.account, undefined, item.qid, item.device);
  }

  pushed(item: QueueItem): void {
    this.copyEvent(PUSH, item);
  }

  acked(item: QueueItem): void {
    this.copyEvent(ACK, item);
  }

  expired(item: QueueItem): void {
    this.copyEvent(EXPIRE, item);
  }

  /** The message is durable and its sender was told `sent`. */
  durable(from: string, fd: number, id: string): void {
    if (this.size === 0 || !this.traced(id)) return;
    this.push(DURABLE, id, from, 0, fd);
  }

  /** `reader` (on `device`) has read its conversation with `peer` up to `seq`. */
  read(reader: string, device: number, peer: string, seq: number): void {
    if (this.size === 0) return;
    this.push(READ, reader, peer, seq, device);
  }

  /** Ring positions from the oldest event to the newest. */
  private slot(k: number): number {
    const j = this.at - this.count + k;
    return j < 0 ? j + this.cap : j;
  }

  /** Traced messages with client id `id` (from `from`, when given), newest first. A scan of the ring. */
  find(id: string, from?: string): TraceEntry[] {
    const out: TraceEntry[] = [];
    for (let k = 0; k < this.count; k++) {
      const j = this.slot(k);
      if (this.kind[j] !== ACCEPT || this.s1[j] !== id || (from !== undefined && this.s2[j] !== from)) continue;
      out.push(this.entry(k));
    }
    return out.reverse();
  }

  /** The message accepted at ring position `k`, with everything that happened to it since. */
  private entry(k: number): TraceEntry {
    const j0 = this.slot(k);
    const e: TraceEntry = {
      from: this.s2[j0]!, fd: this.i[j0]!, id: this.s1[j0]!, to: this.s3[j0]!, seq: this.n[j0]!, accepted: this.ts[j0]!,
      durable: null, copies: [], read: null,
    };
    let copiesDone = false;
    for (let m = k + 1; m < this.count; m++) {
      const j = this.slot(m);
      const kind = this.kind[j];
      if (kind === ACCEPT) copiesDone = true; // its copies are the QUEUED events right after it
      else if (kind === QUEUED) {
        if (!copiesDone) {
          e.copies.push({ account: this.s1[j]!, device: this.i[j]!, kind: KIND[this.k[j]!]!, q: this.n[j]!, pushed: null, pushes: 0, acked: null, expired: null });
        }
      } else if (kind === PUSH || kind === ACK || kind === EXPIRE) {
        const c = e.copies.find((x) => x.q === this.n[j] && x.device === this.i[j] && x.account === this.s1[j]);
        if (c === undefined) continue;
        if (kind === PUSH) {
          if (c.pushes++ === 0) c.pushed = this.ts[j]!;
        } else if (kind === ACK) c.acked ??= this.ts[j]!;
        else c.expired ??= this.ts[j]!;
      } else if (kind === DURABLE) {
        if (e.durable === null && this.s1[j] === e.id && this.s2[j] === e.from && this.i[j] === e.fd) e.durable = this.ts[j]!;
      } else if (kind === READ) {
        if (e.read === null && e.from !== e.to && this.s1[j] === e.to && this.s2[j] === e.from && this.n[j]! >= e.seq) {
          e.read = { account: this.s1[j]!, device: this.i[j]!, ts: this.ts[j]! };
        }
      }
    }
    return e;
  }

  /** Messages whose acceptance is still in the ring. */
  get held(): number {
    let n = 0;
    for (let k = 0; k < this.count; k++) if (this.kind[this.slot(k)] === ACCEPT) n++;
    return n;
  }
}

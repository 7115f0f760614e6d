/**
 * Node links: one persistent TCP connection from this node to each peer,
 * carrying msgpack frames of the client protocol's framing (§2.2); what goes
 * over them is forward.ts.
 *
 * - **Batched per peer per event-loop iteration.** `send` queues; after the
 *   iteration's I/O callbacks (setImmediate) everything queued for a peer goes
 *   out as one `lb` frame with the link's next sequence number. Before, the
 *   batch went at the end of each microtask turn, which is one per client
 *   read: a crossing message cost its own frame, its own receiver hand-over
 *   and ack, and its own outbox transaction (CLUSTER.md "Node links: cost").
 *   A group commit on this node first sends what is queued (`keepNow`), so a
 *   durable item is in the outbox before any row its making implies.
 * - **Ack after durable.** The receiver hands a batch to its handler, which
 *   resolves once the items are durable on this (their home) node; only then
 *   does it answer `la {s}`, cumulative and in order. Batches are pipelined:
 *   batch n+1 is handed while n commits (its ack still waits for n's). The sender resolves each
 *   item's promise on that ack: that is when a forwarded copy may count
 *   toward the sender's `sent`.
 * - **Retry.** Unacked batches are kept and sent again, in order, after every
 *   reconnect (backoff 100 ms doubling to 2 s), so a peer that was killed and
 *   restarted gets everything it did not confirm.
 * - The receiving end is link-receiver.ts.
 * - **Dedup by item key** (sender, device, client id): the receiver hands a key
 *   at most once per process life (two generations of seen keys, like
 *   core/acceptances.ts); across a restart of the receiver the handler must
 *   be idempotent by key, as the home's acceptance records are.
 */
import type { Socket } from "bun";
import { decodeBody, encodeFrame } from "../../protocol/codec.ts";
import { FrameDecoder, HARD_MAX_FRAME } from "../../protocol/frame.ts";
import { log } from "../log.ts";
import type { PeerOutbox } from "../../store/outbox.ts";

/** One forwarded piece: its dedup key and its body (a stanza, opaque here). */
export type LinkItem = [key: string, body: Uint8Array];

/**
 * `lb.f` / `lf.f`: every batch up to this seq is acked and its outbox rows are gone here, so none of its items is
 * sent again (a release: the receiver may forget what it kept only to deduplicate them). A receiver of before it
 * ignores both (it reads `t`, `s`, `i`); a sender of before never sends them, and its items' records are kept.
 */
export type Frame = { t: "lh"; n: string } | { t: "lb"; s: number; i: LinkItem[]; f?: number } | { t: "la"; s: number } | { t: "lf"; f: number };

/** Unacked items a link holds in memory at most before durable ones stay on disk only (LinkSender.memoryItems). */
export const LINK_MEMORY_ITEMS = 10_000;

/**
 * What one item held in memory costs beyond its body's and key's bytes: the LinkItem pair, its promise and
 * resolver, its place in the batch arrays. Measured (scratch: 100 000 non-durable items with 22-character keys sent
 * to a LinkSender whose peer never answers, JSC heap size after a full GC, 2 runs): 598 bytes per item with 300-byte
 * bodies (RSS 757-791), so about 280 beyond body and key; 1 510 with 1 000-byte bodies (the allocator rounds larger
 * bodies up: about 1.3 bytes per body byte there). So the count is an estimate of the heap, within about 20 %.
 */
export const LINK_ITEM_OVERHEAD = 300;

/** Bounds on what a link holds in memory that is not kept on disk (LinkSender.full): items and their bytes. */
export interface LooseBound {
  items: number;
  bytes: number;
}

interface Pending {
  seq: number;
  items: LinkItem[];
  done: (() => void)[];
  /** Keys of its items kept in the outbox (removed at the ack). */
  kept: string[];
  /** Its items not kept on disk, and their bytes (LINK_ITEM_OVERHEAD each beyond body and key): released at its ack. */
  loose: number;
  looseBytes: number;
}

/** The sending end of the link to one peer. */
export class LinkSender {
  private socket: Socket<undefined> | null = null;
  private connecting = false;
  private closed = false;
  private backoff = 100;
  private seq = 0;
  private queued: LinkItem[] = [];
  private queuedDone: (() => void)[] = [];
  private queuedKept: string[] = [];
  private queuedLoose = 0;
  private queuedLooseBytes = 0;
  /** Items held in memory that are not kept on disk (queued or unacked), and their bytes: bounded by `full`. */
  private looseItems = 0;
  private looseBytes = 0;
  /** What the socket did not take yet (write() does not buffer: bun-platform.md), sent from `drain` in order. */
  private out: Uint8Array[] = [];
  /** Told, at the flush, whether each of these items was kept in the outbox. */
  private queuedOnKept: ((kept: boolean) => void)[] = [];
  private scheduled = false;
  private readonly flushLater = (): void => this.flush();
  /** Outbox keys the peer acked, removed in the next outbox transaction (a flush's put, or one of their own). */
  private ackedKept: string[] = [];
  /** The peer's last ack; the ack whose keys wait in ackedKept; the highest batch released (acked, outbox rows gone); told. */
  private ackedThrough = 0;
  private removeThrough = 0;
  private doneThrough = 0;
  private told = 0;
  /** Batches and items sent since the start (retries not counted): items per batch, for /metrics. */
  batches = 0;
  items = 0;
  /** Of those, kept in the outbox (one row each). */
  kept = 0;
  /** Sent and not yet acknowledged, in seq order: sent again after every reconnect. */
  private unacked: Pending[] = [];
  /** Items in `unacked` (their bodies are in memory). */
  private inMemory = 0;
  /**
   * Durable items beyond the memory bound, in order: their bodies only in the outbox, read back as acks make
   * room (refill). While any wait here, every new durable item waits behind them.
   */
  private spill: { key: string; done: () => void }[] = [];
  private decoder = new FrameDecoder(HARD_MAX_FRAME);

  constructor(
    private readonly nodeId: string,
    /** The peer's address now (it may move across restarts: read at every connect). */
    private readonly peer: () => { host: string; port: number } | null,
    /**
     * An open connection to the peer closed (it died, or the network broke): what it had acked was durable
     * there, but what it was still doing for an acked item (an answer to an iq) may be gone.
     */
    private readonly onDrop: () => void = () => {},
    /**
     * Where items sent with `durable` are kept, under this peer's id, from before they first go out until the
     * peer's ack. What is kept there at construction (this node died before those acks) goes out first, with
     * its keys: the peer dedups what it had already.
     */
    private readonly outbox: { store: PeerOutbox; peer: string } | null = null,
    /**
     * Unacked items held in memory at most, beyond which durable ones stay on disk only (their keys and
     * promises stay: about 100 bytes each instead of the body). Non-durable items are always held.
     */
    private readonly memoryItems = LINK_MEMORY_ITEMS,
    /**
     * Items not kept on disk (1:1 copies, look-ups, answers, presence: the outbox keeps only durable ones) held in
     * memory for this peer, at most, and their bytes: past either, `full` is true and the node refuses new sends
     * toward the peer (node.ts) instead of holding more. Nothing is refused here: `send` always queues.
     */
    private readonly looseMax: LooseBound = { items: Infinity, bytes: Infinity },
  ) {
    const left = outbox?.store.list(outbox.peer) ?? [];
    if (left.length === 0) return;
    const now = left.slice(0, memoryItems);
    this.push({ seq: ++this.seq, items: now.map((r) => [r.key, r.body]), done: [], kept: now.map((r) => r.key), loose: 0, looseBytes: 0 });
    for (const r of left.slice(memoryItems)) this.spill.push({ key: r.key, done: () => {} });
    log.info("cluster link: sending again what the outbox kept for a peer", { peer: outbox!.peer, items: left.length });
    queueMicrotask(() => this.connect()); // not from the constructor: its caller may not have what `peer` reads yet
  }

  /**
   * Queues an item; resolves when the peer has it durable. Never rejects: it is retried until `close`. With
   * `durable` (and an outbox) it is kept on disk here before it first goes out, so this node's death before the
   * peer's ack does not lose it; `onKept` is told at the end of the turn whether it was (false: no outbox, or
   * its write failed, and then only the ack says it is safe).
   */
  send(key: string, body: Uint8Array, durable = false, onKept?: (kept: boolean) => void): Promise<void> {
    return new Promise((resolve) => {
      this.queued.push([key, body]);
      this.queuedDone.push(resolve);
      if (durable && this.outbox !== null) this.queuedKept.push(key);
      else {
        const bytes = body.byteLength + key.length + LINK_ITEM_OVERHEAD;
        this.queuedLoose++, (this.queuedLooseBytes += bytes);
        this.looseItems++, (this.looseBytes += bytes);
      }
      if (onKept !== undefined) {
        if (durable && this.outbox !== null) this.queuedOnKept.push(onKept);
        else queueMicrotask(() => onKept(false));
      }
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushLater);
  }

  /**
   * Before a group commit here: what is queued goes out now, so its durable items are in the outbox before the
   * commit makes durable any row their making implies (an ack whose receipt one is). The commit may be cut inside
   * the turn that made them (queue.commit_rows, a commit of durable callbacks) or before this link's setImmediate.
   */
  keepNow(): void {
    if (this.queuedKept.length !== 0) this.flush();
  }

  /** Batches sent and not acknowledged (link lag, for status). */
  get lag(): number {
    return this.unacked.length;
  }

  /** Unacked items whose bodies are in memory, durable ones waiting on disk only, and those not kept on disk (with their bytes). */
  get held(): { memory: number; disk: number; loose: number; looseBytes: number } {
    return { memory: this.inMemory, disk: this.spill.length, loose: this.looseItems, looseBytes: this.looseBytes };
  }

  /** True while what is held for this peer not kept on disk has reached its bound (looseMax): new sends toward it are refused. */
  get full(): boolean {
    return this.looseItems >= this.looseMax.items || this.looseBytes >= this.looseMax.bytes;
  }

  private push(p: Pending): void {
    this.unacked.push(p);
    this.inMemory += p.items.length;
  }

  private flush(): void {
    this.scheduled = false;
    if (this.queued.length === 0) return this.forget(), this.tell();
    const p: Pending = { seq: ++this.seq, items: this.queued, done: this.queuedDone, kept: this.queuedKept, loose: this.queuedLoose, looseBytes: this.queuedLooseBytes };
    this.queued = [];
    this.queuedDone = [];
    this.queuedKept = [];
    this.queuedLoose = this.queuedLooseBytes = 0;
    this.batches++;
    this.items += p.items.length;
    if (p.kept.length || this.ackedKept.length) this.keep(p);
    const told = this.queuedOnKept;
    this.queuedOnKept = [];
    for (const f of told) f(p.kept.length > 0);
    if (p.kept.length && (this.spill.length > 0 || this.inMemory + p.items.length > this.memoryItems)) {
      // Over the bound: the kept items wait on disk, behind what waits there already; the rest goes now.
      const kept = new Set(p.kept);
      const items: LinkItem[] = [];
      const done: (() => void)[] = [];
      p.items.forEach((it, i) => (kept.has(it[0]) ? this.spill.push({ key: it[0], done: p.done[i]! }) : (items.push(it), done.push(p.done[i]!))));
      Object.assign(p, { items, done, kept: [] });
      if (items.length > 0) this.push(p), this.socket ? this.write(p) : this.connect();
      return this.refill(); // after p: unacked stays in seq order
    }
    this.push(p);
    if (this.socket) this.write(p);
    else this.connect();
  }

  /** Reads spilled items back from the outbox, in order, as far as the memory bound allows, and sends them. */
  private refill(): void {
    while (this.spill.length > 0 && this.inMemory < this.memoryItems) {
      const take = this.spill.splice(0, Math.min(this.memoryItems - this.inMemory, 1000));
      const bodies = new Map(this.outbox!.store.get(this.outbox!.peer, take.map((t) => t.key)).map((r) => [r.key, r.body]));
      const p: Pending = { seq: ++this.seq, items: [], done: take.map((t) => t.done), kept: [], loose: 0, looseBytes: 0 };
      for (const t of take) {
        const body = bodies.get(t.key);
        if (body !== undefined) p.items.push([t.key, body]), p.kept.push(t.key);
      }
      this.push(p);
      if (this.socket) this.write(p);
      else this.connect();
    }
  }

  /**
   * One transaction per batch, before it goes out, which also removes the keys acked since the last one: before
   * any group commit of the rows whose making made its items (keepNow) — nothing those rows imply can be durable
   * without it. A failed write (disk full) is logged and the items go out anyway, kept in memory only, as without
   * an outbox (the acked keys stay to be removed with the next).
   */
  private keep(p: Pending): void {
    const kept = new Set(p.kept);
    try {
      this.outbox!.store.put(this.outbox!.peer, p.items.filter(([k]) => kept.has(k)).map(([key, body]) => ({ key, body })), this.ackedKept);
      if (this.ackedKept.length) (this.ackedKept = []), (this.doneThrough = this.removeThrough);
      this.kept += kept.size;
    } catch (e) {
      log.error("cluster link: the outbox could not keep items; they are in memory only until the peer acks", { peer: this.outbox!.peer, items: kept.size, err: e as Error });
      p.kept = [];
    }
  }

  /** Acked keys with no batch to ride: removed in a transaction of their own (at most one per iteration). */
  private forget(): void {
    if (this.ackedKept.length === 0) return;
    const keys = this.ackedKept;
    this.ackedKept = [];
    try {
      this.outbox!.store.remove(this.outbox!.peer, keys);
      this.doneThrough = this.removeThrough;
    } catch (e) {
      // Left there, they go again at the next start, and the peer dedups them.
      log.warn("cluster link: acked items could not be removed from the outbox", { peer: this.outbox!.peer, err: e as Error });
    }
  }

  /**
   * A batch's frame, in order after what the socket has not taken yet. write() takes what the kernel accepts and
   * drops the rest (bun-platform.md): towards a peer that stopped reading (hung, SIGSTOPped) the 4 MB or so of
   * socket buffer fill and every later frame was cut, so the peer, once back, read a frame cut short and spliced
   * with the next. The rest waits here and goes from `drain`; it is dropped with the connection (what it holds is
   * in `unacked`, sent again whole after the reconnect).
   */
  private write(p: Pending): void {
    this.told = this.doneThrough;
    this.put(encodeFrame(this.told ? { t: "lb", s: p.seq, i: p.items, f: this.told } : { t: "lb", s: p.seq, i: p.items }));
  }

  /** A release with no batch to ride (the link is idle in this iteration): one small frame. */
  private tell(): void {
    if (this.doneThrough <= this.told || this.socket === null) return;
    this.told = this.doneThrough;
    this.put(encodeFrame({ t: "lf", f: this.told }));
  }

  /** A frame after those waiting for `drain`, never cut (see write). */
  private put(frame: Uint8Array): void {
    if (this.out.length > 0) return void this.out.push(frame);
    const n = this.socket!.write(frame);
    if (n >= 0 && n < frame.length) this.out.push(frame.subarray(n));
  }

  private drain(s: Socket<undefined>): void {
    while (this.out.length > 0) {
      const f = this.out[0]!;
      const n = s.write(f);
      if (n < 0) return;
      if (n < f.length) return void (this.out[0] = f.subarray(n));
      this.out.shift();
    }
  }

  private connect(): void {
    if (this.connecting || this.socket || this.closed) return;
    const to = this.peer();
    if (!to) return this.retry();
    this.connecting = true;
    Bun.connect({
      hostname: to.host,
      port: to.port,
      socket: {
        binaryType: "uint8array",
        open: (s) => {
          this.connecting = false;
          this.socket = s;
          this.backoff = 100;
          this.decoder = new FrameDecoder(HARD_MAX_FRAME);
          this.out = [];
          s.write(encodeFrame({ t: "lh", n: this.nodeId }));
          for (const p of this.unacked) this.write(p); // retry, in order; the peer dedups by key
        },
        data: (s, chunk) => {
          try {
            this.decoder.feed(chunk, (body) => this.onFrame(decodeBody(body) as Frame));
          } catch (e) {
            log.warn("cluster link: bad frame from peer", { err: e as Error });
            s.terminate();
          }
        },
        drain: (s) => this.drain(s),
        close: () => this.dropped(),
        error: () => {},
        connectError: () => this.dropped(),
      },
    }).catch(() => this.dropped());
  }

  private dropped(): void {
    this.connecting = false;
    const wasOpen = this.socket !== null;
    this.socket = null;
    this.out = [];
    if (wasOpen && !this.closed) this.onDrop();
    if (this.unacked.length || this.queued.length) this.retry();
  }

  private retry(): void {
    if (this.closed) return;
    setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 2000);
  }

  private onFrame(f: Frame): void {
    if (f.t !== "la") return;
    const before = this.ackedKept.length;
    this.ackedThrough = Math.max(this.ackedThrough, f.s);
    while (this.unacked.length && this.unacked[0]!.seq <= f.s) {
      const p = this.unacked.shift()!;
      this.inMemory -= p.items.length;
      this.looseItems -= p.loose;
      this.looseBytes -= p.looseBytes;
      for (const k of p.kept) this.ackedKept.push(k);
      for (const d of p.done) d();
    }
    // Removed with the next batch's put, or on their own in this iteration's flush: a key left there by a crash
    // meanwhile goes again at the next start, and the peer dedups it.
    // Released once nothing acked waits for its removal: at once without an outbox, else with that removal.
    if (this.ackedKept.length > 0) this.removeThrough = this.ackedThrough;
    else this.doneThrough = this.ackedThrough;
    if (this.ackedKept.length > before || this.doneThrough > this.told) this.schedule();
    this.refill();
  }

  close(): void {
    this.closed = true;
    this.forget();
    this.socket?.end();
  }
}

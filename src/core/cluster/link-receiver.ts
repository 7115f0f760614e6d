/**
 * The receiving end of the node links (link.ts has the sending end and the frames): one listener for every peer's
 * link; each batch handed to the handler at once (pipelined), acked once durable, cumulative and in order, one ack
 * frame per iteration; keys deduplicated within one process life; releases (`lb.f`, `lf`) passed to what the
 * handler registered with onRelease.
 */
import type { Socket, TCPSocketListener } from "bun";
import { decodeBody, encodeFrame } from "../../protocol/codec.ts";
import { FrameDecoder, HARD_MAX_FRAME } from "../../protocol/frame.ts";
import { log } from "../log.ts";
import type { Frame, LinkItem } from "./link.ts";

/** Batches a receiver remembers per connection until their release (beyond it the oldest go: their records stay). */
const OPEN_BATCHES = 10_000;

/**
 * What the receiving node does with a batch: resolve once its items are durable here. It is called at once, in the
 * order batches arrive, also while earlier batches are not durable yet (pipelining), so it must take its items in
 * order in its synchronous part (enqueue them into the group commit before it returns).
 */
export type LinkHandler = (from: string, items: LinkItem[]) => Promise<void> | void;

interface In {
  from: string | null;
  decoder: FrameDecoder;
  /** Acks go out strictly in order: batch n's after n-1's, and after its own items are durable. */
  chain: Promise<void>;
  /** The highest batch durable here and not acked yet (0: none); acks are cumulative, so one frame per iteration says it. */
  ackTo: number;
  /** Keys of each batch of this connection, in seq order, until the sender releases it (`f`). */
  open: Map<number, string[]>;
}

/** The receiving end: one listener for every peer's link. */
export class LinkReceiver {
  private listener: TCPSocketListener<In> | null = null;
  /** Keys handed over, with the promise of their durability: two generations, like core/acceptances.ts. */
  private young = new Map<string, Promise<void>>();
  private old = new Map<string, Promise<void>>();
  /** What to call when the sender releases a key (onRelease): two generations, like the keys. */
  private releases = new Map<string, () => void>();
  private releasesOld = new Map<string, () => void>();

  constructor(private readonly handler: LinkHandler, private readonly seenMax = 200_000) {}

  listen(host: string, port: number): number {
    this.listener = Bun.listen<In>({
      hostname: host,
      port,
      socket: {
        binaryType: "uint8array",
        open: (s) => {
          s.data = { from: null, decoder: new FrameDecoder(HARD_MAX_FRAME), chain: Promise.resolve(), ackTo: 0, open: new Map() };
        },
        data: (s, chunk) => {
          try {
            s.data.decoder.feed(chunk, (body) => this.onFrame(s, decodeBody(body) as Frame));
          } catch (e) {
            log.warn("cluster link: bad frame from a peer", { err: e as Error });
            s.terminate();
          }
        },
        close: () => {},
        error: () => {},
      },
    });
    return this.listener.port;
  }

  private onFrame(s: Socket<In>, f: Frame): void {
    if (f.t === "lh") {
      s.data.from = f.n;
      return;
    }
    if (f.t === "lf") return this.released(s, f.f);
    if (f.t !== "lb" || s.data.from === null) return;
    const from = s.data.from;
    // A key seen before (a retry) is not handed again; its batch's ack waits for the first hand-over to be durable,
    // which may still be running on the connection the sender lost.
    const fresh: LinkItem[] = [];
    const waits: Promise<void>[] = [];
    for (const it of f.i) {
      const p = this.young.get(it[0]) ?? this.old.get(it[0]);
      if (p) waits.push(p);
      else fresh.push(it);
    }
    // Pipelined: the batch is handed now, while earlier ones may still be committing, so every batch that arrives
    // during one group commit goes into the next one together. Before, batch n+1 was handed only after n was durable
    // and acked: a link carried one batch per group commit, and a crossing message cost about 6x a local one
    // (docs/CLUSTER.md "What remains" 7). Order is kept by the handler's contract (it takes its items in order in
    // its synchronous part) and acks stay cumulative and in order (the chain).
    let run: Promise<void>;
    try {
      run = Promise.resolve(fresh.length ? this.handler(from, fresh) : undefined);
    } catch (e) {
      run = Promise.reject(e);
    }
    for (const [k] of fresh) this.remember(k, run);
    const open = s.data.open;
    open.set(f.s, f.i.map((it) => it[0]));
    if (open.size > OPEN_BATCHES) open.delete(open.keys().next().value!);
    if (f.f) this.released(s, f.f);
    const durable = Promise.all([run, ...waits]);
    s.data.chain = s.data.chain.then(() => durable).then(
      () => this.ack(s, f.s),
      (err) => {
        // Not durable: no ack (for this batch or any later one on this connection), and the link is cut so that the
        // sender retries from the first unacked batch. Later batches already handed stay remembered: their retries
        // wait for that first hand-over instead of handing again.
        log.error("cluster link: handler failed; the sender will retry", { from, err: err as Error });
        for (const [k] of fresh) this.young.delete(k), this.old.delete(k);
        s.terminate();
      },
    );
  }

  /**
   * What the handler kept only to deduplicate `key` (an acceptance record) may go once the sender released it:
   * `forget` is called then (at most once; not at all if the sender never says, or the key is forgotten first).
   */
  onRelease(key: string, forget: () => void): void {
    if (this.releases.size >= this.seenMax / 2) (this.releasesOld = this.releases), (this.releases = new Map());
    this.releases.set(key, forget);
  }

  /** The sender will not send the items of its batches up to `through` again. */
  private released(s: Socket<In>, through: number): void {
    for (const [seq, keys] of s.data.open) {
      if (seq > through) break;
      s.data.open.delete(seq);
      for (const k of keys) {
        const f = this.releases.get(k) ?? this.releasesOld.get(k);
        if (f === undefined) continue;
        this.releases.delete(k), this.releasesOld.delete(k);
        f();
      }
    }
  }

  /** Batches made durable by one group commit are acked by one frame, after the iteration's callbacks. */
  private ack(s: Socket<In>, seq: number): void {
    const first = s.data.ackTo === 0;
    s.data.ackTo = seq;
    if (first) {
      setImmediate(() => {
        const to = s.data.ackTo;
        s.data.ackTo = 0;
        s.write(encodeFrame({ t: "la", s: to }));
      });
    }
  }

  private remember(key: string, durable: Promise<void>): void {
    if (this.young.size >= this.seenMax / 2) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, durable);
  }

  stop(): void {
    this.listener?.stop(true);
  }
}

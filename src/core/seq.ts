/**
 * Per-conversation sequence numbers: strictly increasing and never reused,
 * also across crashes. Numbers are reserved in blocks: the store records the
 * block's upper bound before any number of it is handed out, and a restart
 * continues above the last recorded bound. A crash therefore leaves a gap of
 * at most one block, never a reuse; a client tells a gap from a loss because
 * a loss is always signalled explicitly (docs/PROTOCOL.md §6).
 *
 * Cost: one synchronous single-row write per `block` messages per
 * conversation (about 25 µs at synchronous=NORMAL).
 */
import type { SeqStore } from "../store/seqs.ts";

/** Numbers reserved per write (exported for the tests that must cross a block). */
export const SEQ_BLOCK = 256;

export class SeqAllocator {
  /** conversation -> [next, hi] */
  private convs = new Map<string, { next: number; hi: number }>();
  /**
   * Cluster mode (docs/CLUSTER.md, "One numbering node"): true for a 1:1 conversation numbered on another node
   * (the home of its lower account name). Such a conversation's numbers come from that node, one per message
   * (`given`); here its row only keeps a watermark of the numbers seen (`observe`), for `latest`. Null on one node.
   */
  elsewhere: ((conv: string) => boolean) | null = null;
  /** Numbers the numbering node issued for the message being accepted now, by conversation (`given`). */
  private preset = new Map<string, number>();
  /**
   * The same counters as `convs` for 1:1 conversations, by the lower account name then the higher (nextOf): a
   * message's number with no key string built. conv() makes a new string per message, which the Map lookup then
   * flattens and hashes (a rope: src/store/by-device.ts measured 86-144 ns against 17-24 ns for nested Maps);
   * SeqAllocator.next was 1.7-2.0 % of the server's samples at `pairs --pairs 10 --window 16`. Kept with `convs`:
   * an entry is added here only once it is in `convs`, and forget() removes it from both.
   */
  private pairs = new Map<string, Map<string, { next: number; hi: number }>>();

  constructor(private store: SeqStore, private block = SEQ_BLOCK) {}

  /** The conversation key of two accounts, independent of direction. */
  static conv(a: string, b: string): string {
    return a < b ? `${a}\u0000${b}` : `${b}\u0000${a}`;
  }

  /**
   * The highest number handed out in a conversation, or an upper bound of it
   * (the reserved block's top) when the conversation has not been used since
   * the process started; 0 for a conversation that never had one. `read`
   * markers above it are ignored. Loading the bound costs the same one-row
   * write as a first next(), which then reserves a fresh block as after a restart.
   */
  latest(conv: string): number {
    let c = this.convs.get(conv);
    if (c === undefined) {
      const hi = this.store.reserveSeq(conv, 0);
      c = { next: hi + 1, hi };
      this.convs.set(conv, c);
    }
    return c.next - 1;
  }

  next(conv: string): number {
    if (this.elsewhere !== null && this.elsewhere(conv)) {
      const n = this.preset.get(conv);
      if (n === undefined) throw new Error(`seq: conversation ${JSON.stringify(conv)} is numbered on another node; accept its messages inside given() with the number that node issued`);
      this.preset.delete(conv);
      return n;
    }
    let c = this.convs.get(conv);
    if (c === undefined) {
      const hi = this.store.reserveSeq(conv, this.block);
      c = { next: hi - this.block + 1, hi };
      this.convs.set(conv, c);
    } else if (c.next > c.hi) {
      c.hi = this.store.reserveSeq(conv, this.block);
      c.next = c.hi - this.block + 1;
    }
    return c.next++;
  }

  /** next(SeqAllocator.conv(a, b)), the counter reached by the two account names (see `pairs`). */
  nextOf(a: string, b: string): number {
    if (this.elsewhere !== null) return this.next(SeqAllocator.conv(a, b)); // cluster mode: the conversation may be numbered elsewhere
    const lo = a < b ? a : b;
    const hi = a < b ? b : a;
    const c = this.pairs.get(lo)?.get(hi);
    if (c === undefined || c.next > c.hi) {
      // First use here (the row is read or a block reserved) or the block is used up: by the conversation's key.
      const conv = SeqAllocator.conv(a, b);
      const n = this.next(conv);
      let inner = this.pairs.get(lo);
      if (inner === undefined) this.pairs.set(lo, (inner = new Map()));
      inner.set(hi, this.convs.get(conv)!);
      return n;
    }
    return c.next++;
  }

  /**
   * Runs `f` (the acceptance of one message) with `seq`, issued by the conversation's numbering node, as the
   * number next(conv) hands out; an unused number is dropped afterwards (a refused message leaves a gap, §6.4).
   */
  given<T>(conv: string, seq: number, f: () => T): T {
    this.observe(conv, seq);
    this.preset.set(conv, seq);
    try {
      return f();
    } finally {
      this.preset.delete(conv);
    }
  }

  /**
   * A number of a conversation numbered on another node, seen here (issued for a message sent from here, or on a
   * message forwarded here): `latest` covers it from now on. The row is raised a block above it when it passes
   * the stored bound, so after a restart `latest` is an upper bound, as for a local conversation: one write per
   * block, not per message.
   */
  observe(conv: string, seq: number): void {
    if (this.elsewhere === null || !this.elsewhere(conv)) return;
    let c = this.convs.get(conv);
    if (c === undefined) {
      const hi = this.store.reserveSeq(conv, 0);
      c = { next: hi + 1, hi };
      this.convs.set(conv, c);
    }
    if (seq > c.hi) c.hi = this.store.reserveSeq(conv, seq - c.hi + this.block);
    if (seq >= c.next) c.next = seq + 1;
  }

  /** Forgets what is held in memory of a conversation (its row came from another node: a shard move); the next use reads the row. */
  forget(conv: string): void {
    this.convs.delete(conv);
    const cut = conv.indexOf("\u0000"); // a 1:1 conversation's key (account names hold no NUL); a group's has none
    if (cut >= 0) this.pairs.get(conv.slice(0, cut))?.delete(conv.slice(cut + 1));
  }
}

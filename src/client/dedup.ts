/**
 * The SDK's recipient-side dedup (docs/PROTOCOL.md §6.3): which deliveries were already handled, bounded by what
 * the server can still send again, not by one global count that a busy conversation fills for everyone.
 *
 * What can come twice, and what bounds it (§6.2, §6.3, §6.4):
 * - A redelivery after a reconnect: only items the server had not yet seen acknowledged. The server keeps at most
 *   its window of unacknowledged items in flight per connection (256 by default), so those are among the last
 *   handled deliveries of any conversation: `RECENT` keys, whatever their conversation, cover them.
 * - A sender's resend that the server accepted anew (a crash in the commit window after a `sent` the sender never
 *   got, or a resend after `queue.dedup_ttl`): it carries a new `seq`, so no sequence watermark recognises it, and
 *   it may come long after the first copy, behind any amount of traffic in other conversations. It comes from the
 *   same sending device in the same conversation, after at most the messages that device sent there in between:
 *   the last `PER_CONVERSATION` keys of each (sending device, conversation) cover it.
 * Conversations are forgotten least recently used first beyond `CONVERSATIONS`, so the state is at most
 * RECENT + PER_CONVERSATION × CONVERSATIONS keys (66 560) however long the session
 * runs; the old global FIFO of 10 000 let a flood of 10 000 messages in one conversation evict every other's keys.
 */
import type { Evt, MsgS, Rcpt } from "../protocol/stanzas.ts";

type Delivery = MsgS | Rcpt | Evt;

/** The conversation a delivery's key is remembered under: for a message, its sending device's conversation with `to` (this account, the peer of a sync copy, or a group). */
export function conversationOf(s: Delivery): string {
  switch (s.t) {
    case "msg":
      return `${s.from}\u0000${s.fd}\u0000${s.to}`;
    case "rcpt":
      return `r\u0000${s.w}`;
    case "evt":
      return `e\u0000${s.g ?? s.u ?? ""}`;
  }
}

/** What identifies a delivery across redeliveries, also by another connection or after a server restart. */
export function deliveryKey(s: Delivery): string {
  switch (s.t) {
    case "msg":
      return `${s.from}\u0000${s.fd}\u0000${s.id}`;
    case "rcpt":
      return `r\u0000${s.k}\u0000${s.u}\u0000${s.d}\u0000${s.w}\u0000${s.seq}`;
    case "evt":
      return `e\u0000${s.k}\u0000${s.g ?? s.u ?? ""}\u0000${s.seq ?? s.d ?? ""}\u0000${s.op}\u0000${s.ts}`;
  }
}

/** Keys remembered regardless of conversation: 4× the server's default in-flight window (§6.3). */
export const RECENT = 1024;
/** Keys remembered per (sending device, conversation): more than one device sends in a conversation in a commit window or two. */
export const PER_CONVERSATION = 128;
/** Conversations tracked, least recently used forgotten first. */
export const CONVERSATIONS = 512;

export class DeliveryDedup {
  private recent = new Set<string>();
  /**
   * The recent keys in arrival order, as a ring: evicting a Set's first entry over and over leaves tombstones that
   * each later `values().next()` walks (BENCHMARKS.md "The dedup map's FIFO eviction is O(map size)").
   */
  private ring: string[] = [];
  private at = 0;
  /** Conversation -> its last keys, oldest first (at most 128: the tombstone walk stays short); the map in least recently used order. */
  private conversations = new Map<string, Set<string>>();
  private perConversation = 0;

  has(conversation: string, key: string): boolean {
    return this.recent.has(key) || this.conversations.get(conversation)?.has(key) === true;
  }

  add(conversation: string, key: string): void {
    if (!this.recent.has(key)) {
      const old = this.ring[this.at];
      if (old !== undefined) this.recent.delete(old);
      this.ring[this.at] = key;
      this.at = (this.at + 1) % RECENT;
      this.recent.add(key);
    }
    let keys = this.conversations.get(conversation);
    if (keys) this.conversations.delete(conversation); // re-inserted below: now the most recently used
    else keys = new Set();
    this.conversations.set(conversation, keys);
    if (!keys.has(key)) {
      keys.add(key);
      this.perConversation++;
      if (keys.size > PER_CONVERSATION) {
        keys.delete(keys.values().next().value!);
        this.perConversation--;
      }
    }
    if (this.conversations.size > CONVERSATIONS) {
      const [oldest, gone] = this.conversations.entries().next().value!;
      this.conversations.delete(oldest);
      this.perConversation -= gone.size;
    }
  }

  /** What is held: conversations tracked, and keys (the recent ones plus every conversation's). */
  get size(): { conversations: number; keys: number } {
    return { conversations: this.conversations.size, keys: this.recent.size + this.perConversation };
  }
}

/**
 * The web client's conversations, without the DOM or the network: what a chat
 * holds, and the marks of our messages derived from the receipts that came,
 * whatever their order. A receipt can overtake the send's own resolution (the
 * peer may get and read a message before our encrypted send resolves), so
 * marks are not a state machine advanced by events: each render computes
 * them from the facts (our seq, the delivered seqs, the read watermark).
 * Persisted as JSON (history.ts): the server keeps nothing once delivered.
 */
import type { Attachment } from "../../src/client/media.ts";

export type Mark = "pending" | "failed" | "sent" | "delivered" | "read";
/** What the page shows for each mark (the CLI's ✓ sent, ✓✓ delivered, ✓✓ read). */
export const MARK_TEXT: Record<Mark, string> = { pending: "…", failed: "!", sent: "✓", delivered: "✓✓", read: "✓✓" };

export interface ChatMessage {
  /** The message id (ours: the client's; theirs: the sender's). */
  id: string;
  from: string;
  mine: boolean;
  text: string;
  attachment?: Attachment & { name?: string };
  ts: number;
  /** The conversation seq: ours once sent, theirs as delivered. */
  seq: number | null;
  /** Why our send failed (shown as !). */
  failed?: string;
  /** A line of the page's own (a security code changed, a member added), not a message. */
  system?: true;
}

export interface GroupTally { n: number; delivered: number; read: number }

export interface Chat {
  /** The peer account, or the group id (`#...`). */
  id: string;
  group: boolean;
  name: string;
  messages: ChatMessage[];
  unread: number;
  /** 1:1: the peer read everything of ours up to this seq. */
  readUpTo: number;
  /** 1:1: our seqs some device of the peer has. */
  delivered: number[];
  /** Groups: group.state of our messages, by seq. */
  tally: Record<number, GroupTally>;
  /** The highest seq of theirs we marked read. */
  markedRead: number;
}

/** Messages kept per chat (older ones are dropped from the page's storage). */
export const KEEP = 500;

export class Chats {
  readonly byId = new Map<string, Chat>();

  constructor(readonly me: string) {}

  chat(id: string, name = id): Chat {
    let c = this.byId.get(id);
    if (!c) {
      c = { id, group: id.startsWith("#"), name, messages: [], unread: 0, readUpTo: 0, delivered: [], tally: {}, markedRead: 0 };
      this.byId.set(id, c);
    }
    return c;
  }

  /** Most recent activity first. */
  list(): Chat[] {
    const last = (c: Chat) => c.messages.at(-1)?.ts ?? 0;
    return [...this.byId.values()].sort((a, b) => last(b) - last(a) || a.name.localeCompare(b.name));
  }

  add(chatId: string, m: ChatMessage): ChatMessage {
    const c = this.chat(chatId);
    const had = c.messages.find((x) => x.id === m.id && x.from === m.from);
    if (had) return had; // a redelivery the SDK did not drop (another device's copy)
    c.messages.push(m);
    if (c.messages.length > KEEP) c.messages.splice(0, c.messages.length - KEEP);
    if (!m.mine && !m.system) c.unread++;
    return m;
  }

  /** A receipt for our message `seq` in `chatId` from `account` (our own account's receipts are our other devices' reading). */
  receipt(chatId: string, kind: string, account: string, seq: number): void {
    // Only chats with messages of ours: a sender key handed to a member 1:1 (SecureClient's, not shown) has receipts too.
    const c = this.byId.get(chatId);
    if (account === this.me || !c) return;
    if (kind === "dlv" && !c.delivered.includes(seq)) {
      c.delivered.push(seq);
      if (c.delivered.length > KEEP) c.delivered.splice(0, c.delivered.length - KEEP);
    } else if (kind === "read") c.readUpTo = Math.max(c.readUpTo, seq);
  }

  mark(c: Chat, m: ChatMessage): Mark {
    if (m.failed) return "failed";
    if (m.seq === null) return "pending";
    if (c.group) {
      const t = c.tally[m.seq];
      if (!t || t.n === 0) return "sent";
      return t.read >= t.n ? "read" : t.delivered >= t.n ? "delivered" : "sent";
    }
    if (m.seq <= c.readUpTo) return "read";
    return c.delivered.includes(m.seq) ? "delivered" : "sent";
  }

  /** The highest seq of theirs in `c` not yet marked read, or 0. */
  toMarkRead(c: Chat): number {
    let top = 0;
    for (const m of c.messages) if (!m.mine && m.seq !== null && m.seq > top) top = m.seq;
    return top > c.markedRead ? top : 0;
  }

  toJSON(): { me: string; chats: Chat[] } {
    return { me: this.me, chats: [...this.byId.values()] };
  }

  static from(json: { me: string; chats: Chat[] }): Chats {
    const cs = new Chats(json.me);
    for (const c of json.chats) cs.byId.set(c.id, c);
    return cs;
  }
}

/**
 * The chats this browser has seen, kept in IndexedDB (the same StateStorage as
 * the key): the server is a relay and keeps nothing once delivered, so the page
 * is where a conversation's history lives. One record per device, rewritten
 * (coalesced to one write per turn) after every change; at most KEEP messages
 * a chat (model.ts).
 */
import type { Receipt, StateStorage } from "../../src/client/browser.ts";
import type { SecureEvents } from "../../src/client/secure-types.ts";
import { Chats } from "./model.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const keyOf = (account: string, device: number) => `chats.${account}.${device}.json`;

export async function loadChats(store: StateStorage, account: string, device: number): Promise<Chats> {
  const b = await store.load(keyOf(account, device));
  return b ? Chats.from(JSON.parse(td.decode(b))) : new Chats(account);
}

/**
 * A function that saves `chats` once at the end of the current turn however often it is called in it; its
 * promise resolves when that write is done (or failed: `onError` has it), for a message's ack to wait on.
 */
export function saver(store: StateStorage, chats: Chats, device: number, onError: (e: unknown) => void): () => Promise<void> {
  let turn: Promise<void> | null = null;
  return () =>
    (turn ??= new Promise<void>((done) =>
      queueMicrotask(() => {
        turn = null;
        store.save(keyOf(chats.me, device), te.encode(JSON.stringify(chats))).then(done, (e) => done(void onError(e)));
      }),
    ));
}

/** What keepIncoming needs of the Messenger (chat.ts; SecureClient). */
export interface Incoming {
  on<K extends keyof SecureEvents>(event: K, fn: (...args: SecureEvents[K]) => void): unknown;
  holdAck(): () => void;
}

/**
 * Adds each incoming message and attachment to `chats`; `changed` stores (and shows) them. Each is acknowledged
 * only once its history is stored (SecureClient.holdAck, docs/E2E.md): a page closed in between gets it again
 * at its next visit, and adds it once (Chats.add drops an id it has). Without the hold the SDK acks once its
 * ratchet state is stored, and a page closed before its history write lost a message the server dropped.
 */
export function keepIncoming(secure: Incoming, chats: Chats, changed: () => Promise<void>): void {
  const me = chats.me;
  secure.on("message", (m) => {
    const release = secure.holdAck();
    chats.add(m.conversation, { id: m.id, from: m.from, mine: m.from === me, text: m.text, ts: m.ts, seq: m.seq });
    void changed().then(release);
  });
  secure.on("attachment", (a) => {
    const release = secure.holdAck();
    chats.add(a.conversation, { id: a.id, from: a.from, mine: a.from === me, text: "", attachment: a.attachment, ts: a.ts, seq: a.seq });
    void changed().then(release);
  });
}

/** What keepReceipts needs of the client (SwitchboardClient). */
export interface ReceiptSource {
  on(event: "receipt", fn: (r: Receipt) => void): unknown;
  holdAck(): () => void;
}

/**
 * Marks each receipt in `chats` (then `also`, the screen's own use of it); `changed` stores (and shows) it. Each is
 * acknowledged only once the history holding its mark is stored, as messages are: a receipt is the server's only
 * copy of the mark it carries (model.ts derives ✓✓ and read from them), so one acknowledged before its write was
 * lost with a page closed in between, and the mark stayed ✓ for good.
 */
export function keepReceipts(client: ReceiptSource, chats: Chats, changed: () => Promise<void>, also: (r: Receipt) => void = () => {}): void {
  client.on("receipt", (r) => {
    const release = client.holdAck();
    chats.receipt(r.with, r.kind, r.account, r.seq);
    also(r);
    void changed().then(release);
  });
}

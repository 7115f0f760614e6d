/**
 * The chats this browser has seen, kept in IndexedDB (the same StateStorage as
 * the key): the server is a relay and keeps nothing once delivered, so the page
 * is where a conversation's history lives. One record per device, rewritten
 * (coalesced to one write per turn) after every change; at most KEEP messages
 * a chat (model.ts).
 */
import type { StateStorage } from "../../src/client/browser.ts";
import { Chats } from "./model.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const keyOf = (account: string, device: number) => `chats.${account}.${device}.json`;

export async function loadChats(store: StateStorage, account: string, device: number): Promise<Chats> {
  const b = await store.load(keyOf(account, device));
  return b ? Chats.from(JSON.parse(td.decode(b))) : new Chats(account);
}

/** A function that saves `chats` once at the end of the current turn however often it is called in it. */
export function saver(store: StateStorage, chats: Chats, device: number, onError: (e: unknown) => void): () => void {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      store.save(keyOf(chats.me, device), te.encode(JSON.stringify(chats))).catch(onError);
    });
  };
}

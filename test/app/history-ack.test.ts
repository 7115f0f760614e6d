/**
 * The web client's history under the ack (web/app/history.ts keepIncoming,
 * SecureClient.holdAck): a message is acknowledged only once the page's
 * history holding it is stored. The page's own code (keepIncoming, saver,
 * loadChats, Chats) runs here in Bun on the browser's SDK entry points, over
 * the WebSocket path of the HTTP port as the page connects, against a real
 * server, with its records in a real StateStorage (fileStorage) whose
 * history writes a gate holds back. While the first page's history write
 * waits, the page is gone (its connection dropped, its pending write never
 * done, as when a tab closes); the page opened next on the same storage gets
 * the message again from the server and shows it once. Without the hold the
 * SDK acked it once its ratchet state was stored, and the next page never
 * sees it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SecureClient } from "../../src/client/secure.ts";
import { fileStorage } from "../../src/client/storage-file.ts";
import type { StateStorage } from "../../src/client/storage.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { keepIncoming, keepReceipts, loadChats, saver } from "../../web/app/history.ts";
import type { Chats } from "../../web/app/model.ts";

let srv: TestServer;
let dir: string;
beforeAll(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(tmpdir(), "sb-history-ack-"));
});
afterAll(() => {
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** fileStorage whose history writes (`chats.*`) wait while `held`; `waiting` counts them. A held write of a closed page never completes. */
function heldHistory(base: StateStorage) {
  const g = {
    held: false,
    waiting: 0,
    storage: {
      name: `held ${base.name}`,
      load: (k: string) => base.load(k),
      async save(k: string, b: Uint8Array) {
        if (g.held && k.startsWith("chats.")) {
          g.waiting++;
          await new Promise<never>(() => {}); // the tab closed with this write pending: it never happens
        }
        return base.save(k, b);
      },
      remove: (k: string) => base.remove(k),
    } satisfies StateStorage,
  };
  return g;
}

/** A page as main.ts opens one: its history loaded, the messenger attached before connecting, over ws.http_path. */
async function openPage(kf: KeyFile, storage: StateStorage): Promise<{ client: SwitchboardClient; secure: SecureClient; chats: Chats; raw: string[]; persist: () => Promise<void> }> {
  let secure!: SecureClient;
  let chats!: Chats;
  let persist!: () => Promise<void>;
  const raw: string[] = []; // the deliveries as they come off the wire, redeliveries included
  const client = await srv.client(kf, {
    url: `ws://127.0.0.1:${srv.http}/ws`,
    setup: async (c) => {
      c.on("message", (m) => raw.push(m.id));
      chats = await loadChats(storage, kf.account, kf.device);
      persist = saver(storage, chats, kf.device, (e) => void errors.push(e));
      secure = await SecureClient.open(c, { storage, stateKey: `${kf.account}.${kf.device}.e2e` });
      keepIncoming(secure, chats, persist);
      keepReceipts(c, chats, persist);
    },
  });
  await secure.whenPublished();
  return { client, secure, chats, raw, persist };
}
const errors: unknown[] = [];

const texts = (chats: Chats, peer: string) => chats.chat(peer, peer).messages.map((m) => m.text);

test("a message whose history write had not happened when the page closed comes again to the next page, and shows once", async () => {
  const kfA = await srv.newDevice("alice"), kfB = await srv.newDevice("bob");
  let alice!: SecureClient;
  await srv.client(kfA, { setup: async (c) => void (alice = await SecureClient.open(c, { storage: fileStorage(dir), stateKey: "alice.e2e" })) });
  await alice.whenPublished();
  const g = heldHistory(fileStorage(dir));
  const page1 = await openPage(kfB, g.storage);
  await alice.send("bob", "one");
  await waitFor(() => texts(page1.chats, "alice").length === 1, "the first message in the first page");
  // Shown is not stored: its write (not held) is done when the file has it, before the gate closes.
  const stored = async () => texts(await loadChats(fileStorage(dir), kfB.account, kfB.device), "alice");
  await waitFor(async () => (await stored()).length === 1, "the first message in the first page's stored history");

  g.held = true;
  const two = await alice.send("bob", "two");
  await waitFor(() => g.waiting === 1, "the first page's history write of the second message, pending");
  expect(texts(page1.chats, "alice")).toEqual(["one", "two"]); // shown, not stored
  page1.client.dropConnection(); // the tab closes: its connection goes, its pending write never happens
  await page1.client.close();

  expect(await stored()).toEqual(["one"]); // what the first page stored
  const page2 = await openPage(kfB, fileStorage(dir));
  await waitFor(() => texts(page2.chats, "alice").length === 2, "the second message, redelivered to the next page (it was never acknowledged)");
  expect(texts(page2.chats, "alice")).toEqual(["one", "two"]);
  expect(page2.raw).toEqual([two.id]);
  // Stored this time: a third page has every message from its history.
  await alice.send("bob", "three");
  await waitFor(() => texts(page2.chats, "alice").length === 3, "a third message");
  // Its history write is done (and so its ack released) once the file has it: a round trip on the connection would
  // not order it, the ack waits for the write.
  await waitFor(async () => (await stored()).length === 3, "the third message in the second page's stored history");
  await page2.client.request("keys.count"); // a round trip behind the ack on the same connection
  await page2.client.close();
  const page3 = await openPage(kfB, fileStorage(dir));
  await page3.client.request("keys.count");
  expect(texts(page3.chats, "alice")).toEqual(["one", "two", "three"]);
  await page3.client.close();
  await alice.client.close();
  expect(errors).toEqual([]);
});

test("a receipt whose history write had not happened when the page closed comes again to the next page, and its mark shows", async () => {
  const kfC = await srv.newDevice("carol"), kfD = await srv.newDevice("dan");
  const danStorage = { storage: fileStorage(dir), stateKey: "dan.e2e" };
  let dan!: SecureClient;
  const danClient = await srv.client(kfD, { setup: async (c) => void (dan = await SecureClient.open(c, danStorage)) });
  await dan.whenPublished();
  await danClient.close(); // offline: the message waits, so its dlv comes only once the gate below is closed
  const g = heldHistory(fileStorage(dir));
  const page1 = await openPage(kfC, g.storage);
  // As the chat screen sends: the line first (pending), its seq once sent.
  const mine = page1.chats.add("dan", { id: "local-1", from: "carol", mine: true, text: "hello", ts: Date.now(), seq: null });
  mine.seq = (await page1.secure.send("dan", "hello")).seq;
  await page1.persist();
  const stored = async () => {
    const c = (await loadChats(fileStorage(dir), kfC.account, kfC.device)).byId.get("dan");
    return c ? { seq: c.messages[0]?.seq ?? null, delivered: c.delivered } : null;
  };
  await waitFor(async () => (await stored())?.seq === mine.seq, "the sent line in the first page's stored history");

  g.held = true;
  const back = await srv.client(kfD, { setup: async (c) => void (dan = await SecureClient.open(c, danStorage)) }); // dan reads it: its dlv comes
  await waitFor(() => page1.chats.byId.get("dan")!.delivered.includes(mine.seq!), "the dlv in the first page");
  await waitFor(() => g.waiting === 1, "the first page's history write of the dlv, pending");
  page1.client.dropConnection(); // the tab closes: its pending write never happens
  await page1.client.close();
  expect(await stored()).toEqual({ seq: mine.seq, delivered: [] }); // what the first page stored

  // The next page: the receipt was never acknowledged, so it comes again and marks the line delivered.
  const page2 = await openPage(kfC, fileStorage(dir));
  const c2 = page2.chats.byId.get("dan")!;
  await waitFor(() => c2.delivered.includes(mine.seq!), "the dlv redelivered to the next page (it was never acknowledged)");
  expect(page2.chats.mark(c2, c2.messages[0]!)).toBe("delivered");
  await waitFor(async () => (await stored())?.delivered.includes(mine.seq!) === true, "the dlv in the second page's stored history");
  await page2.client.close();
  await back.close();
  expect(errors).toEqual([]);
});

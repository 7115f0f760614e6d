/**
 * The web client served at /app (src/core/webapp.ts bundles this file for the
 * browser on the first request). It connects to the WebSocket transport on
 * the same port (ws.http_path, from /app/config.json), makes this browser a
 * device once (setup.ts), keeps the device key in IndexedDB, and logs in with
 * it on every visit. docs/WEBSOCKET.md "The web client" describes it.
 */
import { indexedDbStorage, keyFileSigner, SwitchboardClient, ticketSlot, type KeyFile, type StateStorage } from "../../src/client/browser.ts";
import { ChatScreen } from "./chat.ts";
import { byId, errorText, status } from "./dom.ts";
import { loadChats, saver } from "./history.ts";
import { openMessenger } from "./secure.ts";
import { loadKey, setup } from "./setup.ts";
import { holdDevice } from "./tabs.ts";

async function main(): Promise<void> {
  const root = byId("root");
  const cfg = (await (await fetch("config.json")).json()) as { ws: string | null };
  if (!cfg.ws) {
    status('this server\'s WebSocket path on its HTTP port is turned off (ws.http_path is empty): start it with --ws-http-path /ws, the default', true);
    return;
  }
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${cfg.ws}`;
  const store = indexedDbStorage("switchboard-app");
  const kf = (await loadKey(store)) ?? (await setup(root, url, store));
  await signIn(root, url, kf, store);
}

async function signIn(root: HTMLElement, url: string, kf: KeyFile, store: StateStorage): Promise<void> {
  const who = `signed in as ${kf.account} · device ${kf.device}`;
  let e2e = false;
  const ready = () => status(e2e ? `${who} · end-to-end encrypted` : `${who} · publishing end-to-end keys…`);
  let screen: ChatScreen | null = null;
  let client: SwitchboardClient | null = null;
  let taken = false;
  await holdDevice(kf.account, kf.device, () => {
    // Another tab took this device: stop before anything here writes the shared state again.
    taken = true;
    screen?.stop();
    void client?.close();
    status(`${kf.account}'s device ${kf.device} is now used in another tab or window; reload to use it here`, true);
  });
  status(`signing in as ${kf.account} (device ${kf.device})…`);
  // The resumption ticket in IndexedDB next to the key: a reload resumes in one round trip instead of signing (PROTOCOL.md §4.11).
  const tickets = ticketSlot(store, `${kf.account}.${kf.device}.ticket`);
  client = new SwitchboardClient({ url, host: location.hostname, port: 0, key: kf, sign: await keyFileSigner(kf), userAgent: "switchboard-web", ticketSlot: tickets });
  client.on("ready", () => taken || ready());
  client.on("reconnecting", (r) => status(`connection lost; reconnecting (attempt ${r.attempt})…`, true));
  client.on("close", (c) => {
    if (taken || c.willReconnect) return;
    // Revoked from another device of the account (its device list): this browser's key is refused from now on.
    if (c.reason === "revoked") status(`this device (${kf.account} · device ${kf.device}) was revoked: it is signed out for good; link this browser again to use it`, true);
    else status(`disconnected: ${c.reason}${c.message ? ` (${c.message})` : ""}`, true);
  });
  const chats = await loadChats(store, kf.account, kf.device);
  const persist = saver(store, chats, kf.device, (e) => status(`the chats could not be saved in this browser: ${errorText(e)}`, true));
  // Before connecting: the messages waiting on the server arrive right after login, and must be decrypted.
  const secure = await openMessenger(client, store, kf);
  screen = new ChatScreen(root, client, secure, chats, persist);
  await client.connect();
  await secure.whenPublished();
  e2e = true;
  ready();
  await screen.load();
  screen.render();
}

main().catch((e) => status(errorText(e), true));

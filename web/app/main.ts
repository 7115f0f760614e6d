/**
 * The web client served at /app (src/core/webapp.ts bundles this file for the
 * browser on the first request). It connects to the WebSocket transport on
 * the same port (ws.http_path, from /app/config.json), makes this browser a
 * device once (setup.ts), keeps the device key in IndexedDB, and logs in with
 * it on every visit. docs/WEBSOCKET.md "The web client" describes it.
 */
import { indexedDbStorage, keyFileSigner, SwitchboardClient, type KeyFile } from "../../src/client/browser.ts";
import { byId, errorText, h, status } from "./dom.ts";
import { loadKey, setup } from "./setup.ts";

async function main(): Promise<void> {
  const root = byId("root");
  const cfg = (await (await fetch("config.json")).json()) as { ws: string | null };
  if (!cfg.ws) {
    status("this server has no WebSocket path on its HTTP port: start it with --ws-http-path /ws (ws.http_path)", true);
    return;
  }
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${cfg.ws}`;
  const store = indexedDbStorage("switchboard-app");
  const kf = (await loadKey(store)) ?? (await setup(root, url, store));
  await signIn(root, url, kf);
}

async function signIn(root: HTMLElement, url: string, kf: KeyFile): Promise<void> {
  status(`signing in as ${kf.account} (device ${kf.device})…`);
  const client = new SwitchboardClient({ url, host: location.hostname, port: 0, key: kf, sign: await keyFileSigner(kf), userAgent: "switchboard-web" });
  client.on("ready", () => status(`signed in as ${kf.account} · device ${kf.device}`));
  client.on("reconnecting", (r) => status(`connection lost; reconnecting (attempt ${r.attempt})…`, true));
  client.on("close", (c) => {
    if (!c.willReconnect) status(`disconnected: ${c.reason}${c.message ? ` (${c.message})` : ""}`, true);
  });
  await client.connect();
  root.replaceChildren(
    h("main", { id: "signed-in" },
      h("p", { class: "empty" }, `This browser is ${kf.account}'s device ${kf.device}. Messaging needs SecureClient in the browser build (docs/WEBSOCKET.md, "Not done yet"): nothing is sent unencrypted meanwhile.`),
    ),
  );
  (globalThis as { switchboard?: unknown }).switchboard = { account: kf.account, device: kf.device };
}

main().catch((e) => status(errorText(e), true));

/**
 * The web client's end-to-end encryption: the SDK's SecureClient (X3DH, the
 * Double Ratchet, Sender Keys, safety numbers: exactly the CLI's) on
 * WebCrypto, its state in IndexedDB next to the device key. There is no
 * other way to send: a page without it sends nothing.
 */
import { SecureClient, type KeyFile, type StateStorage, type SwitchboardClient } from "../../src/client/browser.ts";
import type { Messenger } from "./chat.ts";

export type WebMessenger = Messenger & { whenPublished(): Promise<void> };

export async function openMessenger(client: SwitchboardClient, store: StateStorage, kf: KeyFile): Promise<WebMessenger> {
  const s = await SecureClient.open(client, { storage: store, stateKey: `${kf.account}.${kf.device}.e2e` });
  return {
    on: (event, fn) => s.on(event, fn),
    send: (to, text) => s.send(to, text),
    sendGroup: (g, text) => s.sendGroup(g, text),
    safetyNumber: (a) => s.safetyNumber(a),
    sendFile: (to, file) => s.sendFile(to, file, { name: file.name, type: file.type || "application/octet-stream" }),
    fetchFile: async (att) => new Blob([(await s.fetchAttachment(att)).slice()], { type: att.type }),
    whenPublished: () => s.whenPublished(),
    holdAck: () => s.holdAck(),
  };
}

/**
 * `switchboard/client` in a browser bundle (package.json `exports`, condition
 * "browser"): the client over WebSocket (`url: "wss://…"`) with a WebCrypto
 * login signer, and SecureClient (end-to-end encryption on WebCrypto, its
 * state in IndexedDB, attachments in memory: sendFile(to, bytes or a Blob),
 * fetchAttachment). What needs node:* (key files, enrollment with a node key,
 * attachments from and to paths) is not exported here; the Node/Bun entry is
 * index.ts. package.json `imports` maps the modules that would pull node:*
 * in (#node-keys, #e2e-crypto, #state-file, #media-files) to browser ones.
 *
 * @example
 * import { SwitchboardClient, keyFileSigner } from "switchboard/client";
 * const c = new SwitchboardClient({ url: "wss://chat.example/ws", host: "", port: 0, key, sign: await keyFileSigner(key) });
 * const s = await SecureClient.open(c, { storage: indexedDbStorage(), stateKey: "me.e2e" });
 */
export { SwitchboardClient, ClientError, ServerError } from "./client.ts";
export type { ClientOptions, CloseInfo, Code, ConnectOptions, DeviceEvent, Events, GroupEvent, GroupInfo, Message, Receipt, Sent } from "./client.ts";
export type { KeyFile } from "./keys.ts";
export { webCryptoSigner, keyFileSigner, generateWebDeviceKey, webKeyFile, type WebDeviceKey } from "./keys-web.ts";
export { enrollDevice, linkDevice, type EnrollKey } from "./handshake.ts";
export { indexedDbStorage } from "./storage-idb.ts";
export type { StateStorage } from "./storage.ts";
export { ticketSlot, type TicketSlot } from "./ticket.ts";
export { SecureClient, MediaError, safeFileName } from "./secure.ts";
export type { DevicesChange, IdentityChange, SecureAttachment, SecureMessage, SecureOptions, Undecryptable, Attachment, Progress, UploadOptions } from "./secure.ts";
export { formatSafetyNumber } from "./crypto/safety.ts";
export { PROTOCOL_VERSION } from "../protocol/stanzas.ts";

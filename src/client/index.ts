/**
 * The SDK's public entry: what an app imports as `switchboard/client`
 * (package.json `exports`; test/client/package.test.ts builds a tiny app
 * against the packed tarball). Anything not exported here is internal and may
 * change; apps never reach into `src/`.
 *
 * Targets: Bun (TCP, TLS or WebSocket, chosen by `url`) and bundlers. In a
 * browser bundle only the WebSocket wire can connect, and key files and
 * file attachments need node:fs (browser.ts is the browser entry).
 *
 * @example
 * import { SwitchboardClient, readKeyFile } from "switchboard/client";
 * const c = new SwitchboardClient({ host: "127.0.0.1", port: 5222, key: readKeyFile("alice.key") });
 * await c.connect();
 * await c.send("bob", "hello");
 */
export { SwitchboardClient, enrollDevice, linkDevice, ClientError, ServerError } from "./client.ts";
export type { ClientOptions, CloseInfo, Code, ConnectOptions, DeviceEvent, Events, GroupEvent, GroupInfo, Message, Receipt, Sent } from "./client.ts";
export { generateDeviceKey, keyToFile, keyFromFile, readKeyFile, writeKeyFile, signProof, type DeviceKey, type KeyFile } from "./keys.ts";
export { webCryptoSigner, keyFileSigner, generateWebDeviceKey, webKeyFile, type WebDeviceKey } from "./keys-web.ts";
export { fileStorage } from "./storage-file.ts";
export type { StateStorage } from "./storage.ts";
export { ticketSlot, type TicketSlot } from "./ticket.ts";
export type { EnrollKey } from "./handshake.ts";
export { SecureClient, statePathFor, MediaError, safeFileName } from "./secure.ts";
export { formatSafetyNumber } from "./crypto/safety.ts";
export type { DevicesChange, IdentityChange, SecureAttachment, SecureMessage, SecureOptions, Undecryptable, Attachment, DownloadOptions, MediaTls, Progress, UploadOptions, UploadSource } from "./secure.ts";
export { PROTOCOL_VERSION } from "../protocol/stanzas.ts";

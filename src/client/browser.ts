/**
 * `switchboard/client` in a browser bundle (package.json `exports`, condition
 * "browser"): the client over WebSocket (`url: "wss://…"`) with a WebCrypto
 * login signer. What needs node:* (key files, enrollment with a node key,
 * SecureClient's E2E crypto) is not exported here yet (docs/WEBSOCKET.md
 * "Not done yet"); the Node/Bun entry is index.ts.
 *
 * @example
 * import { SwitchboardClient, keyFileSigner } from "switchboard/client";
 * const c = new SwitchboardClient({ url: "wss://chat.example/ws", host: "", port: 0, key, sign: await keyFileSigner(key) });
 */
export { SwitchboardClient, ClientError, ServerError } from "./client.ts";
export type { ClientOptions, CloseInfo, Code, ConnectOptions, DeviceEvent, Events, GroupEvent, GroupInfo, Message, Receipt, Sent } from "./client.ts";
export type { KeyFile } from "./keys.ts";
export { webCryptoSigner, keyFileSigner, generateWebDeviceKey, webKeyFile, type WebDeviceKey } from "./keys-web.ts";
export { enrollDevice, linkDevice, type EnrollKey } from "./handshake.ts";
export { indexedDbStorage } from "./storage-idb.ts";
export type { StateStorage } from "./storage.ts";
export { PROTOCOL_VERSION } from "../protocol/stanzas.ts";

/**
 * What a browser bundle gets for "#node-keys" (package.json `imports`, condition
 * "browser"; elsewhere it is keys.ts): the two node-key operations the client
 * core would call, refusing with the fix. In a page a device signs with its
 * own signer (ClientOptions.sign, keys-web.ts), so they are never reached, and
 * keys.ts (node:crypto, node:fs) stays out of the bundle, and with it Bun's
 * stand-ins for node:crypto and node:buffer: `bun build --target browser` of a
 * page using the browser entry went from 1 078 363 to 148 232 bytes.
 */
import type { DeviceKey, KeyFile } from "./keys.ts";

export function fileSigner(_kf: KeyFile): (transcript: Uint8Array) => Uint8Array {
  throw new Error("in a browser, give the client a signer: ClientOptions.sign = await keyFileSigner(keyFile) (switchboard/client)");
}

export function signProof(_key: DeviceKey, _transcript: Uint8Array): Uint8Array {
  throw new Error("in a browser, enroll or link with a key that signs itself: generateWebDeviceKey() (switchboard/client)");
}

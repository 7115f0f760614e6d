/**
 * Device keys in a browser: the login signer over WebCrypto's Ed25519
 * (`crypto.subtle`, in current Chromium, Firefox and Safari, and in Bun), for
 * `ClientOptions.sign`. No node:* import, so it bundles for the browser.
 * What is still node-only (E2E crypto, key files, IndexedDB storage) is
 * listed in docs/WEBSOCKET.md "Not done yet".
 */
import type { KeyFile } from "./keys.ts";

/** A signer for `ClientOptions.sign` from an Ed25519 private key in PKCS#8 DER (a key file's `sk`, decoded). */
export async function webCryptoSigner(pkcs8: Uint8Array): Promise<(transcript: Uint8Array) => Promise<Uint8Array>> {
  const key = await crypto.subtle.importKey("pkcs8", pkcs8.slice(), { name: "Ed25519" }, false, ["sign"]);
  return async (transcript) => new Uint8Array(await crypto.subtle.sign("Ed25519", key, transcript.slice()));
}

/** The same from a key file (its `sk` is base64 PKCS#8), e.g. one an app keeps in its own storage. */
export function keyFileSigner(kf: KeyFile): Promise<(transcript: Uint8Array) => Promise<Uint8Array>> {
  return webCryptoSigner(Uint8Array.from(atob(kf.sk), (c) => c.charCodeAt(0)));
}

/** A device key made in the browser: its raw public key, PKCS#8 private key (to keep: `webKeyFile`) and signer. */
export interface WebDeviceKey {
  publicKey: Uint8Array;
  pkcs8: Uint8Array;
  sign(transcript: Uint8Array): Promise<Uint8Array>;
}

/** A new Ed25519 device key from WebCrypto, for `enrollDevice` / `linkDevice` in a page. */
export async function generateWebDeviceKey(): Promise<WebDeviceKey> {
  const kp = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as unknown as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", kp.privateKey));
  return { publicKey, pkcs8, sign: await webCryptoSigner(pkcs8) };
}

const b64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));

/** The key file of an enrolled web device (the same JSON as keys.ts writes), for StateStorage (storage-idb.ts) and `keyFileSigner`. */
export function webKeyFile(key: WebDeviceKey, account: string, device: number): KeyFile {
  return { account, device, pk: b64(key.publicKey), sk: b64(key.pkcs8) };
}

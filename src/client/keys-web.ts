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

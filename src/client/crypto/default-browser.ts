/** What a browser bundle gets for "#e2e-crypto" (package.json `imports`; elsewhere default.ts): WebCrypto. */
import type { AsyncCryptoProvider } from "./async.ts";
import { webCrypto } from "./webcrypto.ts";

export const defaultCrypto: AsyncCryptoProvider = webCrypto;

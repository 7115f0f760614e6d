/**
 * The provider E2E code uses unless told otherwise, in Bun and Node:
 * node:crypto behind the asynchronous interface (faster than WebCrypto here:
 * primitives.ts has the figures). A browser bundle gets default-browser.ts
 * instead (package.json `imports`, "#e2e-crypto"), so node:crypto stays out of pages.
 */
import { asyncOf, type AsyncCryptoProvider } from "./async.ts";
import { nodeCrypto } from "./node.ts";

export const defaultCrypto: AsyncCryptoProvider = asyncOf(nodeCrypto);

/**
 * End-to-end encryption for Switchboard clients: X3DH, the Double Ratchet and
 * Sender Keys after Signal's specifications, over an AsyncCryptoProvider
 * (async.ts): node:crypto in Bun and Node, WebCrypto in a browser bundle
 * (default.ts or default-browser.ts: package.json "#e2e-crypto"), or one given to
 * `E2EDevice.create`. No node:* import here. docs/E2E.md
 * describes the design, the deviations from the specifications and the threat
 * model. `E2EDevice` is the entry point; the other exports are its parts,
 * for tests, benchmarks and other clients.
 */
export { E2EDevice, PREVIOUS_KEPT, SIGNED_PREKEYS_KEPT, type DecryptOutcome, type KnownIdentity, type PublishArgs, type Session, type SessionResult } from "./session.ts";
export { asyncOf, type AsyncCryptoProvider } from "./async.ts";
export { e2eCrypto, type E2ECrypto } from "./primitives.ts";
export {
  keyVersion, identityBytes, checkBundle, generateIdentity, generateSignedPreKey, associatedData, x3dhInitiate, x3dhRespond, X3DH_INFO,
  type Address, type Bundle, type IdentityKeys, type PublicIdentity, type SignedPreKey,
} from "./x3dh.ts";
export {
  ratchetEncrypt, ratchetDecrypt, initInitiator, initResponder, kdfRk, kdfCk, messageKeys, encodeHeader, decodeHeader,
  ratchetToData, ratchetFromData, MAX_SKIP, MAX_STORED_SKIPPED, RK_INFO, MK_INFO, type RatchetState,
} from "./ratchet.ts";
export {
  createSenderKey, distributionBytes, parseDistribution, installDistribution, senderEncrypt, senderDecrypt, senderContext,
  SENDER_MAX_SKIP, SENDER_MAX_STORED, SK_INFO, type SenderKeyState, type GroupDecryptResult,
} from "./senderkeys.ts";
export { safetyNumber, fingerprintHalf, combineHalves, formatSafetyNumber, FINGERPRINT_ITERATIONS, type AccountIdentity } from "./safety.ts";
export { encodeEnvelope, decodeEnvelope, ENVELOPE_VERSION, pack, unpack, type Envelope } from "./envelope.ts";
export * as primitives from "./primitives.ts";

/** The options and events of SecureClient (secure.ts). */
import type { Message } from "./client.ts";
import type { AsyncCryptoProvider } from "./crypto/index.ts";
import type { Attachment } from "./media-format.ts";
import type { StateStorage } from "./storage.ts";

export interface SecureOptions {
  /** The state file (created if absent), in Bun and Node. Keep it next to the device key file, e.g. `alice.key.e2e`. */
  statePath?: string;
  /** Or a StateStorage (indexedDbStorage() in a browser, fileStorage(dir)) and the key of the state's record in it. */
  storage?: StateStorage;
  stateKey?: string;
  /** The crypto implementation (default: node:crypto in Bun and Node, WebCrypto in a browser bundle). */
  crypto?: AsyncCryptoProvider;
  /** One-time prekeys to keep on the server (default 100; the server's `keys.max_otk` caps it). */
  otkTarget?: number;
  /** Rotate the signed prekey when it is older than this (default 7 days). */
  spkMaxAgeMs?: number;
  /** fsync the state file (statePath) on every save (default true). Off only for tests and benchmarks. */
  fsync?: boolean;
}

/** A decrypted message: the SDK's Message with the plaintext instead of the payload (and no queue id: it is acked for you). */
export interface SecureMessage extends Omit<Message, "payload" | "q"> {
  group: boolean;
  body: Uint8Array;
  /** `body` as UTF-8 text. */
  text: string;
}

/** An attachment arrived (`{att}` in an end-to-end encrypted message): `SecureClient.download` fetches and checks it. */
export interface SecureAttachment extends Omit<SecureMessage, "body" | "text"> {
  attachment: Attachment;
}

export interface IdentityChange {
  account: string;
  device: number;
  /** The new key version, and the one we knew before. */
  kv: number;
  previousKv: number;
}

export interface Undecryptable {
  conversation: string;
  from: string;
  fromDevice: number;
  id: string;
  seq: number;
  /** Why (crypto/session.ts, crypto/senderkeys.ts): `no_session`, `bad_mac`, `no_sender_key`, `notice:no_keys`, ... */
  reason: string;
}

/**
 * The device list of an account changed from the one we last saw (and remembered in the state file): the
 * safety number with it changed. Not emitted the first time an account is seen (nothing to compare with).
 */
export interface DevicesChange {
  account: string;
  /** Devices that get our messages from now on (ascending). */
  added: number[];
  /** Devices that no longer do: revoked (ascending). */
  removed: number[];
}

export type SecureEvents = {
  message: [SecureMessage];
  attachment: [SecureAttachment];
  identityChanged: [IdentityChange];
  devicesChanged: [DevicesChange];
  undecryptable: [Undecryptable];
  /** A background task (key publication, refill, rotation) failed; it is tried again on the next connection. */
  error: [Error];
};

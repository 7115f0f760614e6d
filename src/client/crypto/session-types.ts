/** The result and record shapes of E2EDevice (session.ts). */
import type { PublicIdentity } from "./x3dh.ts";

export interface KnownIdentity extends PublicIdentity {
  kv: number;
  /** When this identity was first seen for the device (ms). */
  since: number;
}

export type SessionResult =
  | { ok: true; identityChanged: boolean; previous?: KnownIdentity }
  | { ok: false; reason: string };

export type DecryptOutcome =
  | {
      ok: true;
      plaintext: Uint8Array;
      /** The message set up a new session (a prekey message). */
      newSession: boolean;
      identityChanged: boolean;
      previous?: KnownIdentity;
    }
  | { ok: false; reason: string; notice?: string };

/** The arguments of `keys.publish`. */
export interface PublishArgs {
  ik: Uint8Array;
  dh: Uint8Array;
  dhs: Uint8Array;
  spk: { id: number; k: Uint8Array; s: Uint8Array };
  otk?: [number, Uint8Array][];
}

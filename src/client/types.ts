/**
 * The SDK's public types: options, what the events carry, and its errors.
 * Shared by the wire, session and API layers (re-exported by client.ts).
 */
import type { ClientCode, CloseReason, ErrorCode } from "../protocol/errors.ts";
import type { KeyFile } from "./keys.ts";
import type { PresenceView } from "./presence.ts";
import type { TicketSlot } from "./ticket.ts";

export interface ConnectOptions {
  host: string;
  port: number;
  tls?: boolean | { ca?: string; serverName?: string; rejectUnauthorized?: boolean };
  /**
   * A ws:// or wss:// URL: connect over WebSocket (wire-ws.ts, the only transport a browser has)
   * instead of TCP to host:port. host and port then only name the server in messages. For wss://
   * in Bun, `tls` (an object) is handed to Bun's WebSocket: `{ ca }` to trust a private CA.
   */
  url?: string;
  /** How long to wait for the server's hello, and then for the login's `ready`, before giving up on a connection and reconnecting (default 10 000 ms each). */
  helloTimeoutMs?: number;
}

export interface ClientOptions extends ConnectOptions {
  /** The device: account and device id, and (unless `sign` is given) its Ed25519 key. */
  key: KeyFile;
  /**
   * Signs a login transcript as the device, for keys the SDK does not hold itself: a WebCrypto
   * Ed25519 key in a browser (`webCryptoSigner`, src/client/keys-web.ts), a hardware key. With it,
   * `key.sk` is not read. Default: the key of `key.sk`, through node:crypto.
   */
  sign?: (transcript: Uint8Array) => Uint8Array | Promise<Uint8Array>;
  /** Reconnect after a drop (default true). Read at each drop, so it may be changed on a live client. */
  reconnect?: boolean;
  /** Acknowledge deliveries after the handlers ran (default true). With false, call `ack()` yourself. */
  autoAck?: boolean;
  /**
   * Confirm each `sent` to the server once handled (`ack {sc}`, docs/PROTOCOL.md §6.2), so that it keeps the
   * message's dedup record only until then; default true. false: behave as a client from before the confirmation
   * (the server keeps the record for its whole retention).
   */
  confirmSent?: boolean;
  /** Ping interval override in ms (default: what the server announces). */
  pingMs?: number;
  userAgent?: string;
  /**
   * false: a non-receiving session (docs/PROTOCOL.md §4.6) for one-shot work: it sends and gets
   * the answers to its own requests, is delivered nothing, and never evicts the device's
   * receiving session (a chat open elsewhere) nor is evicted by it. Default true.
   */
  rx?: boolean;
  /**
   * Reconnect with a resumption ticket from the previous login (`resume` in the same write as the hello:
   * one round trip and no Ed25519 signature, docs/PROTOCOL.md §4.11); a refused ticket falls back to `auth`
   * on the same connection. Default true; the first login always signs with the device key.
   */
  tickets?: boolean;
  /**
   * Keeps the ticket across processes (ticket.ts TicketSlot: a file next to the key file, as the CLI does, or
   * `ticketSlot(storage, key)` on a StateStorage): read at the first connect, written after each login, removed
   * when the server refuses it. Without it the ticket lives in memory and a new process signs its first login.
   */
  ticketSlot?: TicketSlot;
}

/** A code the SDK may report: the server's (§7, §8 of docs/PROTOCOL.md), the SDK's own, or one from a newer server. */
export type Code = ErrorCode | CloseReason | ClientCode | (string & {});

export interface Message {
  /** The other party of the conversation, or the group id for a group message. */
  conversation: string;
  from: string;
  fromDevice: number;
  to: string;
  id: string;
  seq: number;
  ts: number;
  payload: Uint8Array;
  /** A copy of a message one of our own other devices sent. */
  sync: boolean;
  q: number;
}

export interface Receipt {
  /**
   * dlv: delivered to that device; read: read up to seq; exp: expired unread on the server, never delivered there;
   * full: (groups) not queued for that device because its queue was at its bound.
   */
  kind: "dlv" | "read" | "exp" | "full";
  /** The account and device that received or read. */
  account: string;
  device: number;
  /** The conversation, from our side. */
  with: string;
  seq: number;
  id?: string;
  ts: number;
  q: number;
}

export interface Sent {
  id: string;
  to: string;
  seq: number;
  ts: number;
}

/** A failure reported by the server (`err`, a failed `res`, a `close`), or one the SDK names with a ClientCode. */
export class ServerError extends Error {
  constructor(readonly code: Code, message: string, readonly detail?: unknown) {
    super(`${code}: ${message}`);
    this.name = "ServerError";
  }
}

/**
 * A failure on the client's side that is not the server's verdict (the
 * connection closed under a request, no session yet, a timeout). The message
 * is for people; `code` is for programs.
 */
export class ClientError extends Error {
  constructor(readonly code: ClientCode, message: string) {
    super(message);
    this.name = "ClientError";
  }
}

/** A membership change of a group we are (or were, for our own removal) in. */
export interface GroupEvent {
  op: "create" | "add" | "remove" | "leave" | "promote" | "demote" | "rename";
  group: string;
  seq: number;
  by: string;
  /** The accounts the change is about (all members for `create`). */
  members: string[];
  name?: string;
  ts: number;
}

/** One of our own account's devices was linked or revoked. */
export interface DeviceEvent {
  op: "linked" | "revoked";
  account: string;
  device: number;
  name?: string;
  ts: number;
}

export interface GroupInfo {
  g: string;
  name: string;
  created: number;
  creator: string;
  members: { u: string; admin: boolean; since: number }[];
}

export interface CloseInfo {
  reason: Code;
  message?: string;
  willReconnect: boolean;
}

export interface CallSignal {
  kind: "offer" | "answer" | "ice" | "hangup" | "busy" | "reject" | "stop";
  /** The caller's call id. */
  id: string;
  /** The other account and device (for a timeout `stop` to the caller, no device). */
  from: string;
  fromDevice?: number;
  /** The opaque payload made for this device (the SDP or candidate, end-to-end encrypted by the application). */
  payload?: Uint8Array;
  /** `stop`: why (answered, rejected, busy, hangup, timeout). */
  why?: string;
  group?: string;
  ts: number;
}

export type Events = {
  ready: [{ account: string; device: number }];
  message: [Message];
  receipt: [Receipt];
  sent: [Sent];
  /** `expired`: no `typing` came for TYPING_TTL_MS (src/client/presence.ts), so it is over. */
  typing: [{ account: string; device: number; state: "typing" | "paused"; expired?: boolean }];
  /** A watched account's presence changed, or the watch ended (`ended`). */
  presence: [PresenceView];
  /** `count` messages or receipts for this device expired on the server before it came to take them. */
  gap: [{ count: number; ts: number }];
  group: [GroupEvent];
  device: [DeviceEvent];
  /** This device's one-time prekeys run low on the server (`count` left): upload more. */
  keys: [{ op: "low"; count: number; ts: number }];
  /** A call signal (src/client/calls.ts): an offer ringing here, the other side's answer, ICE, hangup, or `stop` ringing. */
  call: [CallSignal];
  /** A call to this account that rang unanswered (queued: also comes after being offline). */
  missedCall: [{ from: string; fromDevice: number; id: string; group?: string; ts: number }];
  error: [ServerError];
  close: [CloseInfo];
  reconnecting: [{ attempt: number; delayMs: number }];
};

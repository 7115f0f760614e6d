/**
 * Stable error codes and close reasons. These strings are part of the wire
 * protocol (docs/PROTOCOL.md §7, §8): never rename one, only add.
 */

/** Codes carried by `err` frames and failed `res` frames. */
export const ErrorCode = {
  // Framing and validation (protocol violations).
  BAD_FRAME: "bad_frame", // body is not one valid msgpack value
  FRAME_TOO_LARGE: "frame_too_large", // length prefix above the negotiated maximum
  UNKNOWN_KIND: "unknown_kind", // `t` names no stanza kind known for this direction
  BAD_FIELD: "bad_field", // a field is missing, of the wrong type, or out of its limits
  UNSUPPORTED_VERSION: "unsupported_version",
  HELLO_REQUIRED: "hello_required", // first frame was not `hello`
  NOT_AUTHENTICATED: "not_authenticated",
  ALREADY_AUTHENTICATED: "already_authenticated",
  TOO_MANY_ERRORS: "too_many_errors",
  // Identity.
  AUTH_FAILED: "auth_failed",
  RATE_LIMITED: "rate_limited",
  TRY_AGAIN: "try_again", // admission control: the server is over capacity; `x.retry_ms` says when to come back
  BAD_CODE: "bad_code",
  TOO_MANY_DEVICES: "too_many_devices",
  KEY_IN_USE: "key_in_use",
  LINK_EXPIRED: "link_expired",
  TICKET_REFUSED: "ticket_refused", // a `resume` whose ticket or proof does not pass (expired, rotated out, replayed, forged, device revoked); not fatal: log in with `auth` on the same connection
  // Routing and requests (expected failures).
  UNKNOWN_USER: "unknown_user",
  UNKNOWN_DEVICE: "unknown_device",
  NO_DEVICES: "no_devices",
  DEVICES_MISMATCH: "devices_mismatch",
  DEVICES_STALE: "devices_stale", // a payload was encrypted for a device's old keys (its key version changed)
  UNKNOWN_GROUP: "unknown_group",
  NOT_MEMBER: "not_member", // the group exists but the sender is not (or no longer) a member
  GROUP_FULL: "group_full",
  TOO_MANY_GROUPS: "too_many_groups", // an account is already in as many groups as the server allows
  BAD_SIGNATURE: "bad_signature", // keys.publish / keys.spk: a signature does not verify against the identity key
  TOO_MANY_KEYS: "too_many_keys", // keys.publish / keys.otk: the batch would take a device's one-time prekeys above keys.max_otk
  UNKNOWN_OP: "unknown_op",
  NOT_FOUND: "not_found",
  FORBIDDEN: "forbidden",
  QUEUE_FULL: "queue_full",
  INTERNAL: "internal",
  PUSH_UNAVAILABLE: "push_unavailable", // push.set for a provider this server has no credentials for (push.get lists those it has)
  // Cluster mode.
  RETRY_AFTER: "retry_after", // the account's home shard has no live owner right now (its node is down or lost its lease); `x.retry_ms` says when to try again
  ACCOUNT_DISABLED: "account_disabled", // a login to an account the operator disabled (`switchboard user disable`)
  STORAGE_UNAVAILABLE: "storage_unavailable", // the server cannot make a message durable now (disk full, I/O error); `x: {cause, retry_ms}`
  // Presence and blocking (docs/PROTOCOL.md §6.10, §6.11).
  BLOCKED: "blocked", // a block between sender and recipient (either way) refuses the message or the invitation
  TOO_MANY_CONTACTS: "too_many_contacts", // contacts.add would exceed presence.max_contacts
  TOO_MANY_SUBSCRIPTIONS: "too_many_subscriptions", // presence.sub would exceed presence.max_subs for this device
  // Attachments (docs/PROTOCOL.md §6.12, docs/MEDIA.md).
  TOO_LARGE: "too_large", // media.upload declares more bytes than media.max_file; `x: {limit, max}`
  QUOTA: "quota", // media.upload would pass an account's stored or daily limit; `x: {limit, max, used, retry_ms?}`
  // Calls (docs/PROTOCOL.md §6.13).
  OVERLOADED: "overloaded", // a new call refused while the server or its relays shed load; `x: {scope: "group" | "direct", retry_ms}`; calls in progress go on
  UNKNOWN_CALL: "unknown_call", // an answer, reject or busy for a call that is not ringing (answered elsewhere, hung up, timed out)
  NOT_CONFIGURED: "not_configured", // the server has no setting for this (calls.turn without calls.secret)
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Why a connection closed. One enum labels the `close` frame, the log line and
 * the `switchboard_closes_total{reason}` metric (NATS's ClosedState).
 */
export const CloseReason = {
  CLIENT_QUIT: "client_quit", // the client sent `close`
  PEER_CLOSED: "peer_closed", // the socket ended without a `close` frame
  SERVER_SHUTDOWN: "server_shutdown",
  PROTOCOL_ERROR: "protocol_error", // going on would be unsafe (framing lost, no hello, error budget spent)
  FRAME_TOO_LARGE: "frame_too_large",
  UNSUPPORTED_VERSION: "unsupported_version",
  AUTH_FAILED: "auth_failed",
  AUTH_TIMEOUT: "auth_timeout",
  RATE_LIMITED: "rate_limited",
  IDLE_TIMEOUT: "idle_timeout",
  SLOW_CONSUMER: "slow_consumer",
  REPLACED: "replaced", // the same device logged in again elsewhere
  REVOKED: "revoked",
  SOCKET_ERROR: "socket_error",
  TLS_ERROR: "tls_error",
  TRY_AGAIN: "try_again", // admission control: come back after `ra` ms
  REDIRECT: "redirect", // cluster mode: after a `redirect` stanza; reconnect at once to the address it named
  ACCOUNT_DISABLED: "account_disabled", // the operator disabled the account (`switchboard user disable`)
  KICKED: "kicked", // the operator closed this device's sessions (`switchboard device kick`)
} as const;
export type CloseReason = (typeof CloseReason)[keyof typeof CloseReason];

export const CLOSE_REASONS: readonly CloseReason[] = Object.values(CloseReason);

/**
 * Codes the client SDK reports for failures on its own side of a connection.
 * Never sent on the wire and never sent by a server: a separate set, so that
 * ErrorCode and CloseReason stay exactly what docs/PROTOCOL.md §7/§8 list.
 * They appear as the `reason` of the SDK's `close` event, as `ServerError.code`
 * and as `ClientError.code` (src/client/types.ts).
 */
export const ClientCode = {
  CONNECT_ERROR: "connect_error", // no connection, or it failed before the server's hello (refused, TLS, no hello in time)
  BAD_SERVER_FRAME: "bad_server_frame", // the server sent a frame that does not validate (the SDK reports it as an `err`)
  CONNECTION_CLOSED: "connection_closed", // a request was pending when the connection closed
  NOT_CONNECTED: "not_connected", // a request was made with no ready session (await connect() first)
  TIMEOUT: "timeout", // the server did not answer in time (no hello, missed pongs)
} as const;
export type ClientCode = (typeof ClientCode)[keyof typeof ClientCode];

/** A violation of the wire protocol by the peer. Carries the stable code. */
export class ProtocolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Set when the stream cannot be trusted any more and must be closed. */
    readonly fatal: boolean = false,
  ) {
    super(message);
    this.name = "ProtocolError";
  }
}

/** The shape of every expected failure in our own APIs (Prosody's `nil, err`). */
export type Result<T> = { ok: true; value: T } | { ok: false; reason: ErrorCode; message: string; detail?: unknown };
export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
export const fail = <T = never>(reason: ErrorCode, message: string, detail?: unknown): Result<T> => ({
  ok: false,
  reason,
  message,
  detail,
});

/**
 * How a CLI command reaches the server as a device: where to connect (flags,
 * the key file, the server's configuration), a logged-in client, and failures
 * turned into sentences a person can act on.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { UsageError } from "./args.ts";
import { loadConfig } from "../core/config.ts";
import { ClientCode, CloseReason, ErrorCode } from "../protocol/errors.ts";
import { ServerError, SwitchboardClient, type ConnectOptions } from "../client/client.ts";
import { readKeyFile, type KeyFile } from "../client/keys.ts";
import { statePathFor } from "../client/secure.ts";
import { fileSlot } from "../client/storage-file.ts";
import type { TicketSlot } from "../client/ticket.ts";
import { need, pick } from "./util.ts";

/**
 * What a key file remembers of the server its device enrolled with. `ca` is the
 * certificate the CLI trusted then (the development certificate or --ca),
 * pinned so that later commands work from any directory.
 */
type ServerInfo = NonNullable<KeyFile["server"]> & { ca?: string; serverName?: string };

/** A listen address as a client reaches it: a wildcard is reached on loopback. */
export const reachable = (host: string) => (host === "0.0.0.0" || host === "" ? "127.0.0.1" : host === "::" ? "::1" : host);

/**
 * Where to connect: flags first, then what the key file remembers, then the
 * server's configuration (--config FILE or SWITCHBOARD_CONFIG, SWITCHBOARD_TCP_PORT
 * and the other variables: what `serve` would listen on), then the defaults.
 * TLS trust: --ca, else --insecure, else the certificate pinned in the key
 * file, else the development certificate of the data directory, else the
 * system's CAs.
 */
export function connectOptions(flags: Record<string, string>, kf?: KeyFile): ConnectOptions {
  const tls = flags["--tls"] === "true" || (flags["--tls"] === undefined && flags["--port"] === undefined && kf?.server?.tls === true);
  // The key file's port only where its host and transport still apply (`--tls` alone means the configured TLS port).
  const remembered = flags["--host"] === undefined && kf?.server !== undefined && kf.server.tls === tls ? kf.server : undefined;
  let host = flags["--host"] ?? kf?.server?.host;
  let port: number | undefined = flags["--port"] !== undefined ? Number(flags["--port"]) : remembered?.port;
  if (host === undefined || port === undefined) {
    const cfg = loadConfig({ flags: pick(flags, ["--config"]) });
    const listener = tls ? cfg.tls : cfg.tcp;
    host ??= reachable(listener.host);
    port ??= listener.port > 0 ? listener.port : tls ? 5223 : 5222;
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port must be a port number (1..65535), got ${JSON.stringify(flags["--port"])}`);
  if (!tls) return { host, port };
  if (flags["--insecure"] === "true") return { host, port, tls: { rejectUnauthorized: false } };
  // A certificate the user names is checked against the host name; the development
  // certificate the server generated (found when this runs beside it) names localhost.
  const serverName = isIP(host) ? "localhost" : host;
  if (flags["--ca"] !== undefined) {
    if (!existsSync(flags["--ca"])) throw new UsageError(`--ca ${flags["--ca"]} does not exist`);
    return { host, port, tls: { ca: readFileSync(flags["--ca"], "utf8"), serverName } };
  }
  const pinned = (kf?.server as ServerInfo | undefined)?.ca;
  if (pinned && flags["--data-dir"] === undefined) {
    return { host, port, tls: { ca: pinned, serverName: (kf!.server as ServerInfo).serverName ?? serverName } };
  }
  const devCert = join(loadConfig({ flags: pick(flags, ["--data-dir", "--config"]) }).dataDir, "tls", "dev-cert.pem");
  if (existsSync(devCert)) return { host, port, tls: { ca: readFileSync(devCert, "utf8"), serverName: "localhost" } };
  // The system's trusted CAs. Not `tls: true`: the SDK turns that into `{}`, which Bun takes for plain TCP.
  return { host, port, tls: { rejectUnauthorized: true } };
}

/** What a key file remembers of where its device enrolled. */
export function serverOf(c: ConnectOptions): ServerInfo {
  const info: ServerInfo = { host: c.host, port: c.port, tls: c.tls !== undefined && c.tls !== false };
  if (typeof c.tls === "object" && c.tls.ca) {
    info.ca = c.tls.ca;
    if (c.tls.serverName) info.serverName = c.tls.serverName;
  }
  return info;
}

export const where = (c: ConnectOptions) => `${c.host}:${c.port}${c.tls ? " (TLS)" : ""}`;

/** What a person can do about a failure the server reported (error codes and close reasons, docs/PROTOCOL.md §7-8). */
const HINTS: Record<string, string> = {
  [ErrorCode.AUTH_FAILED]:
    "the server refused this device's key: the device may have been revoked (check with `switchboard device list` from another device of the account), or the key file belongs to another server (check --host and --port)",
  [CloseReason.REVOKED]: "this device was revoked; get a new code with `switchboard user code NAME` and enroll again, or link a new device",
  [CloseReason.REPLACED]:
    "another chat or listen logged in with the same key file; a device holds one connection at a time for receiving (one-shot commands do not count), so give each receiving program its own device (`switchboard device link`)",
  [ErrorCode.RATE_LIMITED]: "too many failed logins from this address or for this account; wait a minute and try again",
  [ErrorCode.TOO_MANY_DEVICES]: "the account has all the devices it may have; revoke one first (`switchboard device revoke`)",
  [ErrorCode.KEY_IN_USE]: "this key is already enrolled as another device; generate a new key file (use a new --key file name)",
  [ErrorCode.LINK_EXPIRED]: "nobody approved the link in time; run the command again and approve the new code sooner",
  [ErrorCode.NO_DEVICES]: "the account exists but no device has joined it: one enrolls with `switchboard device enroll` (a code from `user add` or `user code`)",
  [ErrorCode.UNKNOWN_USER]: "accounts are created on the server with `switchboard user add NAME`",
  [ErrorCode.BAD_CODE]:
    "the code is wrong, used, expired or replaced by a newer one (`switchboard user code NAME` prints a new one); or this is another server than the one that issued it (check --host and --port, or --config)",
  [ErrorCode.UNSUPPORTED_VERSION]: "the server speaks another protocol version; update the client or the server",
  [ErrorCode.TRY_AGAIN]: "the server is busy; try again in a moment",
  [ErrorCode.ACCOUNT_DISABLED]: "the server's operator disabled this account (`switchboard user enable NAME` on the server turns it back on); its data is kept",
  [CloseReason.KICKED]: "the server's operator closed this device's session (`switchboard device kick`); it may log in again",
  [ErrorCode.STORAGE_UNAVAILABLE]: "the server cannot store messages right now (its disk is full or failing): nothing was sent; try again later",
  [CloseReason.SERVER_SHUTDOWN]: "the server is shutting down; try again when it is back",
  [CloseReason.SLOW_CONSUMER]: "this client read too slowly and the server cut it off",
  [ErrorCode.UNKNOWN_GROUP]: "`switchboard group list` shows the groups this account is in",
  [ErrorCode.NOT_MEMBER]: "`switchboard group info GROUP` shows the members; an admin adds accounts with `group add`",
  [ErrorCode.FORBIDDEN]: "only the group's admins may do this; `switchboard group info GROUP` shows who they are",
};


/** Turns a failure into a message for a person: what happened, where, and what to try. */
export function explain(e: unknown, conn: ConnectOptions): Error {
  if (e instanceof UsageError) return e;
  const err = e as Error;
  const code = e instanceof ServerError ? e.code : undefined;
  const raw = e instanceof ServerError ? err.message.replace(/^connect_error: /, "") : err.message;
  const tlsTrouble = /certificate|self[- ]signed|SSL|TLS|handshake/i.test(raw);
  if (code === ClientCode.CONNECT_ERROR || code === CloseReason.PEER_CLOSED || code === undefined) {
    if (conn.tls && (tlsTrouble || /closed during hello/.test(raw))) {
      // The SDK does not pass on the TLS handshake error: an untrusted certificate and a plain port look alike.
      const tcp = tlsTrouble ? "" : `, or ${conn.port} is not a TLS port (drop --tls for the plain TCP port)`;
      return new Error(
        `cannot connect to ${where(conn)}: ${raw}\n  the server's TLS certificate may not be trusted: pass --ca FILE (for the development certificate, DATA_DIR/tls/dev-cert.pem of the server), or --data-dir DIR of the server, or --insecure to skip the check (testing only)${tcp}`,
      );
    }
    if (/^frame of \d+ bytes/.test(raw)) {
      return new Error(
        `cannot connect to ${where(conn)}: the other end does not speak Switchboard's protocol${conn.tls ? "" : " over plain TCP (is it the TLS port? then add --tls)"}\n  check --host and --port`,
      );
    }
    if (code !== undefined || /connect|ECONNREFUSED|closed|reset/i.test(raw)) {
      return new Error(
        `cannot connect to ${where(conn)}: ${raw}\n  is the server running (npm start, or switchboard serve)? Check --host and --port${conn.tls ? " (is it the TLS port? without --tls the plain TCP port)" : ", and --tls for the TLS port"}`,
      );
    }
    return err;
  }
  const hint = HINTS[code];
  return new Error(hint ? `${err.message}\n  ${hint}` : err.message);
}

/** Warns, as ssh does, when a private key file can be read by others than its owner. */
export function warnIfExposed(path: string): void {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch {
    return; // a missing file is reported by whoever reads it
  }
  if ((mode & 0o077) === 0) return;
  const m = (mode & 0o777).toString(8).padStart(3, "0");
  console.error(`switchboard: warning: ${path} is readable by others (mode ${m}); it is a private key: chmod 600 ${path}`);
}

/**
 * Where the CLI keeps the device's resumption ticket (docs/PROTOCOL.md §4.11): KEY.ticket, mode 0600, replaced
 * atomically, so that the next command resumes in one round trip instead of signing (ClientOptions.ticketSlot).
 */
export const ticketPathFor = (keyPath: string) => `${keyPath}.ticket`;
export const ticketSlotFor = (keyPath: string): TicketSlot => fileSlot(ticketPathFor(keyPath));

/** The key file of --key, read, with a warning when it or its end-to-end state is open to others. */
export function keyFileOf(flags: Record<string, string>, usage: string): KeyFile {
  const path = need(flags, "--key", "the device key file written by `device enroll` or `device link`", usage);
  const kf = readKeyFile(path);
  warnIfExposed(path);
  warnIfExposed(statePathFor(path));
  warnIfExposed(ticketPathFor(path));
  return kf;
}

/**
 * A connected client for the key file of --key. One-shot commands pass
 * `reconnect: false` and `autoAck: false` (messages waiting for the device stay
 * queued for its next `listen` or `chat`). `setup` attaches handlers before the
 * login, so nothing delivered right after `ready` is missed.
 */
export async function openClient(
  f: Record<string, string>,
  usage: string,
  o: { reconnect: boolean; autoAck: boolean; setup?: (c: SwitchboardClient) => void | Promise<void> },
): Promise<{ client: SwitchboardClient; conn: ConnectOptions }> {
  const kf = keyFileOf(f, usage);
  const conn = connectOptions(f, kf);
  // The first login fails fast (a wrong port or a revoked key is an answer, not a reason to retry).
  // A one-shot command (no reconnect) logs in as a non-receiving session: it must not evict a chat open on the same device.
  const client = new SwitchboardClient({ ...conn, key: kf, userAgent: "switchboard-cli", reconnect: false, autoAck: o.autoAck, rx: o.reconnect, ticketSlot: ticketSlotFor(f["--key"]!) });
  await o.setup?.(client);
  try {
    await client.connect();
  } catch (e) {
    throw explain(e, conn);
  }
  // After that, a long-running command rides out server restarts and network trouble.
  if (o.reconnect) client.opts.reconnect = true;
  return { client, conn };
}

/** Runs `fn` with a connected one-shot client, explains its failures, and closes it. */
export async function withClient<T>(f: Record<string, string>, usage: string, fn: (c: SwitchboardClient) => Promise<T>): Promise<T> {
  const { client } = await openClient(f, usage, { reconnect: false, autoAck: false });
  try {
    return await fn(client);
  } catch (e) {
    throw explain(e, client.opts);
  } finally {
    await client.close();
  }
}

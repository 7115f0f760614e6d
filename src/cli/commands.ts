/**
 * The client and administration subcommands. Administration (`user add`,
 * `user code`) writes the data directory directly (SQLite copes with the
 * server running at the same time); everything else talks to a running
 * server through the SDK, as a device, with its key file.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { isIP } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { checkFlags, UsageError, type Args } from "./args.ts";
import { CONFIG_FLAGS, loadConfig } from "../core/config.ts";
import { SqliteAccountStore } from "../store/accounts.ts";
import { enrollDevice, linkDevice, newMessageId, ServerError, SwitchboardClient, type ConnectOptions, type Sent } from "../client/client.ts";
import { generateDeviceKey, keyToFile, readKeyFile, writeKeyFile, type KeyFile } from "../client/keys.ts";
import { isInternalAccount } from "../core/session.ts";
import { traceCommand } from "../ops/trace-cli.ts";
import { SecureClient, statePathFor, type DevicesChange, type IdentityChange, type Undecryptable } from "../client/secure.ts";
import type { DeviceEvent } from "../client/client.ts";
import { formatSafetyNumber } from "../client/crypto/index.ts";
import { GROUP_ID_RE, isGroupId } from "../protocol/stanzas.ts";

/** Flags of every command that talks to a server. */
const CONNECTION = ["--host", "--port", "--tls", "--ca", "--insecure", "--data-dir", "--config"];

interface Spec {
  usage: string;
  flags: ReadonlySet<string>;
  /** Positional arguments after the command name: [min, max]. */
  args: [number, number];
}

const spec = (usage: string, flags: Iterable<string>, args: [number, number] = [0, 0]): Spec => ({ usage, flags: new Set(flags), args });

export const COMMANDS: Record<string, Spec> = {
  "user add": spec("switchboard user add NAME [--json] [--data-dir DIR]", [...CONFIG_FLAGS, "--json"], [1, 1]),
  "user code": spec("switchboard user code NAME [--json] [--data-dir DIR]", [...CONFIG_FLAGS, "--json"], [1, 1]),
  "device enroll": spec("switchboard device enroll --user NAME --code CODE [--key FILE] [--name LABEL] [--json]", [...CONNECTION, "--user", "--code", "--key", "--name", "--json"]),
  "device link": spec(
    "switchboard device link --user NAME [--key FILE] [--name LABEL] [--json]   (on the new device)\n       switchboard device link --approve CODE --key FILE [--json]               (on an existing device)",
    [...CONNECTION, "--user", "--key", "--name", "--json", "--approve"],
  ),
  "device list": spec("switchboard device list --key FILE [--user NAME] [--json]", [...CONNECTION, "--key", "--user", "--json"]),
  "device revoke": spec("switchboard device revoke --key FILE --device N [--json]", [...CONNECTION, "--key", "--device", "--json"]),
  send: spec("switchboard send --key FILE --to NAME|#GROUP [--plain] [TEXT...]", [...CONNECTION, "--key", "--to", "--plain"], [0, Infinity]),
  listen: spec("switchboard listen --key FILE [--no-ack] [--plain]", [...CONNECTION, "--key", "--no-ack", "--plain"]),
  chat: spec("switchboard chat --key FILE --to NAME|#GROUP [--plain] [--lines]", [...CONNECTION, "--key", "--to", "--plain", "--lines"]),
  safety: spec("switchboard safety ACCOUNT --key FILE [--json]", [...CONNECTION, "--key", "--json"], [1, 1]),
  "group create": spec("switchboard group create NAME [MEMBER...] --key FILE [--json]", [...CONNECTION, "--key", "--json"], [1, Infinity]),
  "group add": spec("switchboard group add GROUP MEMBER... --key FILE [--json]", [...CONNECTION, "--key", "--json"], [2, Infinity]),
  "group remove": spec("switchboard group remove GROUP MEMBER... --key FILE [--json]", [...CONNECTION, "--key", "--json"], [2, Infinity]),
  "group leave": spec("switchboard group leave GROUP --key FILE [--json]", [...CONNECTION, "--key", "--json"], [1, 1]),
  "group list": spec("switchboard group list --key FILE [--json]", [...CONNECTION, "--key", "--json"]),
  "group info": spec("switchboard group info GROUP --key FILE [--json]", [...CONNECTION, "--key", "--json"], [1, 1]),
  reload: spec("switchboard reload [--config FILE] [--http-port N] [--json]", [...CONFIG_FLAGS, "--json"]),
  trace: spec("switchboard trace [ACCOUNT] CID [--config FILE] [--http-port N] [--json]", [...CONFIG_FLAGS, "--json"], [1, 2]),
};

export const CLIENT_COMMANDS: ReadonlySet<string> = new Set(Object.keys(COMMANDS));

export const CLIENT_USAGE = `accounts (run beside the server: they write its data directory, ./data or --data-dir DIR)
  user add NAME                      create an account; prints a one-time enrollment code
  user code NAME                     print a new enrollment code for an existing account

devices (a key file is one device of one account; keep it private)
  device enroll --user NAME --code CODE [--key FILE] [--name LABEL]
                                     enroll a device with a code from \`user add\`; writes NAME.key
  device link --user NAME [--key FILE] [--name LABEL]
                                     add a device without a code: prints a link code and waits
  device link --approve CODE --key FILE
                                     approve that code from a device the account already has
  device list --key FILE [--user NAME]
  device revoke --key FILE --device N

messages (end-to-end encrypted: the server relays text it cannot read)
  send --key FILE --to NAME [TEXT...]   send TEXT, or each line of stdin; one JSON line per message sent
  listen --key FILE [--no-ack]          print every event (message, receipt, security code change, ...)
                                        as a JSON line
  chat --key FILE --to NAME [--lines]   an interactive conversation in the terminal (--lines: plain
                                        lines, no prompt); /safety in it prints the safety number
  safety ACCOUNT --key FILE             the 60-digit safety number of your account and ACCOUNT: compare
                                        it with theirs (same digits: nobody sits in between); it changes
                                        when either account adds, removes or re-keys a device
  --plain                               send, listen or chat without encryption: the text travels as it
                                        is, and the server (and whoever runs it) can read it
  A device's end-to-end state (its identity keys and sessions) is FILE.e2e beside its key file FILE:
  keep both private and together. \`device enroll\` and \`device link\` publish the device's keys
  right away (and any later use publishes them again if they are missing). Deleting FILE.e2e gives
  the device a new identity: its peers see "security code changed".

groups (a group id starts with #: quote it in the shell, '#k3x9')
  group create NAME [MEMBER...] --key FILE   create a group with you as its admin; prints its id
  group add GROUP MEMBER... --key FILE       add members (admins)
  group remove GROUP MEMBER... --key FILE    remove members (admins)
  group leave GROUP --key FILE
  group list --key FILE                      your groups
  group info GROUP --key FILE                its name and members
  send and chat take --to GROUP; listen prints group messages with the group as "conversation"

connection flags (device, send, listen, chat, safety, group)
  --host H (127.0.0.1)   --port N (5222, or 5223 with --tls)   --tls [--ca FILE | --insecure]
  A key file remembers where its device enrolled, so later commands need only --key.
  With --tls and no --ca, the server's development certificate is trusted from
  its data directory (./data/tls/dev-cert.pem, or under --data-dir DIR).
--json prints one JSON object per line instead of text.`;

const out = (o: unknown) => console.log(JSON.stringify(o));

function need(flags: Record<string, string>, name: string, why: string, usage: string): string {
  const v = flags[name];
  if (v === undefined || v === "") throw new UsageError(`${name} is required: ${why}`, usage);
  return v;
}

/**
 * What a key file remembers of the server its device enrolled with. `ca` is the
 * certificate the CLI trusted then (the development certificate or --ca),
 * pinned so that later commands work from any directory.
 */
type ServerInfo = NonNullable<KeyFile["server"]> & { ca?: string; serverName?: string };

/**
 * Where to connect: flags first, then what the key file remembers, then the
 * defaults. TLS trust: --ca, else --insecure, else the certificate pinned in the
 * key file, else the development certificate of the data directory, else the
 * system's CAs.
 */
function connectOptions(flags: Record<string, string>, kf?: KeyFile): ConnectOptions {
  const tls = flags["--tls"] === "true" || (flags["--tls"] === undefined && flags["--port"] === undefined && kf?.server?.tls === true);
  const host = flags["--host"] ?? kf?.server?.host ?? "127.0.0.1";
  // The key file's port only where its host and transport still apply (`--tls` alone means the default TLS port).
  const remembered = flags["--host"] === undefined && kf?.server !== undefined && kf.server.tls === tls ? kf.server.port : undefined;
  const port = Number(flags["--port"] ?? remembered ?? (tls ? 5223 : 5222));
  if (!/^\d+$/.test(String(port)) || port < 1 || port > 65535) throw new UsageError(`--port must be a port number (1..65535), got ${JSON.stringify(flags["--port"])}`);
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

function pick(flags: Record<string, string>, names: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (const n of names) if (flags[n] !== undefined) o[n] = flags[n]!;
  return o;
}

function serverOf(c: ConnectOptions): ServerInfo {
  const info: ServerInfo = { host: c.host, port: c.port, tls: c.tls !== undefined && c.tls !== false };
  if (typeof c.tls === "object" && c.tls.ca) {
    info.ca = c.tls.ca;
    if (c.tls.serverName) info.serverName = c.tls.serverName;
  }
  return info;
}

/** 2026-11-22 11:52 in local time: short, sortable, unambiguous. */
function localTime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

const where = (c: ConnectOptions) => `${c.host}:${c.port}${c.tls ? " (TLS)" : ""}`;

/** What a person can do about a failure the server reported (error codes and close reasons, docs/PROTOCOL.md §7-8). */
const HINTS: Record<string, string> = {
  auth_failed:
    "the server refused this device's key: the device may have been revoked (check with `switchboard device list` from another device of the account), or the key file belongs to another server (check --host and --port)",
  revoked: "this device was revoked; get a new code with `switchboard user code NAME` and enroll again, or link a new device",
  replaced:
    "the same key file logged in from another program; a device holds one connection at a time, so give each running program its own device (`switchboard device link`)",
  rate_limited: "too many failed logins from this address or for this account; wait a minute and try again",
  too_many_devices: "the account has all the devices it may have; revoke one first (`switchboard device revoke`)",
  key_in_use: "this key is already enrolled as another device; generate a new key file (use a new --key file name)",
  link_expired: "nobody approved the link in time; run the command again and approve the new code sooner",
  unknown_user: "accounts are created on the server with `switchboard user add NAME`",
  unsupported_version: "the server speaks another protocol version; update the client or the server",
  try_again: "the server is busy; try again in a moment",
  server_shutdown: "the server is shutting down; try again when it is back",
  slow_consumer: "this client read too slowly and the server cut it off",
  unknown_group: "`switchboard group list` shows the groups this account is in",
  not_member: "`switchboard group info GROUP` shows the members; an admin adds accounts with `group add`",
  forbidden: "only the group's admins may do this; `switchboard group info GROUP` shows who they are",
};

/** Turns a failure into a message for a person: what happened, where, and what to try. */
function explain(e: unknown, conn: ConnectOptions): Error {
  if (e instanceof UsageError) return e;
  const err = e as Error;
  const code = e instanceof ServerError ? e.code : undefined;
  const raw = e instanceof ServerError ? err.message.replace(/^connect_error: /, "") : err.message;
  const tlsTrouble = /certificate|self[- ]signed|SSL|TLS|handshake/i.test(raw);
  if (code === "connect_error" || code === "peer_closed" || code === undefined) {
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

/**
 * A connected client for the key file of --key. One-shot commands pass
 * `reconnect: false` and `autoAck: false` (messages waiting for the device stay
 * queued for its next `listen` or `chat`). `setup` attaches handlers before the
 * login, so nothing delivered right after `ready` is missed.
 */
async function openClient(
  f: Record<string, string>,
  usage: string,
  o: { reconnect: boolean; autoAck: boolean; setup?: (c: SwitchboardClient) => void },
): Promise<{ client: SwitchboardClient; conn: ConnectOptions }> {
  const kf = readKeyFile(need(f, "--key", "the device key file written by `device enroll` or `device link`", usage));
  const conn = connectOptions(f, kf);
  // The first login fails fast (a wrong port or a revoked key is an answer, not a reason to retry).
  // A one-shot command (no reconnect) logs in as a non-receiving session: it must not evict a chat open on the same device.
  const client = new SwitchboardClient({ ...conn, key: kf, userAgent: "switchboard-cli", reconnect: false, autoAck: o.autoAck, rx: o.reconnect });
  o.setup?.(client);
  try {
    await client.connect();
  } catch (e) {
    throw explain(e, conn);
  }
  // After that, a long-running command rides out server restarts and network trouble.
  if (o.reconnect) client.opts.reconnect = true;
  return { client, conn };
}

/** Resolves on SIGINT or SIGTERM. Keeps a timer alive meanwhile: Bun busy-waits when only signal handlers hold the process open. */
function interrupted(): { done: Promise<string>; cancel: () => void } {
  const keepAlive = setInterval(() => {}, 1 << 30);
  let resolve!: (s: string) => void;
  const done = new Promise<string>((r) => (resolve = r));
  const onInt = () => resolve("SIGINT");
  const onTerm = () => resolve("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  const cancel = () => {
    clearInterval(keepAlive);
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  };
  void done.then(cancel);
  return { done, cancel };
}

// ---- end-to-end encryption -------------------------------------------------------------------

type ClientEvent = Parameters<SwitchboardClient["on"]>[0];

/**
 * A SecureClient on `client` (state file `statePath`) that does not subscribe
 * to the client events in `ignore`. SecureClient subscribes to message, ready,
 * keys, group and device in its constructor and has no option to leave one
 * out, so `client.on` is shadowed for the constructor's duration. What needs
 * it: a command that does not acknowledge deliveries (one-shot commands,
 * `listen --no-ack`) must not decrypt with the device's state, since the
 * ratchet decrypts a message once: the redelivery on the next `listen` would
 * be dropped as a duplicate, unseen. (The CLI tests catch it if SecureClient
 * subscribes some other way: "one-shot commands leave the device's incoming
 * messages queued for its next listen".)
 */
function secureClient(client: SwitchboardClient, statePath: string, ignore: ClientEvent[] = []): SecureClient {
  if (ignore.length === 0) return new SecureClient(client, { statePath });
  const on = client.on;
  const skip = new Set<string>(ignore);
  Object.defineProperty(client, "on", {
    configurable: true,
    value(this: SwitchboardClient, event: ClientEvent, fn: never) {
      return skip.has(event) ? this : on.call(this, event, fn);
    },
  });
  try {
    return new SecureClient(client, { statePath });
  } finally {
    delete (client as { on?: unknown }).on; // the prototype's again
  }
}

/** Resolves when the device's keys are on the server; rejects with the first background failure before that. */
function published(s: SecureClient): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (e: Error) => {
      s.off("error", failed);
      reject(e);
    };
    s.on("error", failed); // failures that are not the server's refusal (whenPublished rejects on those)
    s.whenPublished().then(
      () => {
        s.off("error", failed);
        resolve();
      },
      failed,
    );
  });
}

/**
 * Publishes a new device's end-to-end keys (identity, signed prekey, one-time
 * prekeys) and writes its state file, so that others can write to it
 * encrypted before it is first used. Returns why it failed, or null: the
 * device exists either way, and any later use publishes what is missing.
 */
async function publishNewDevice(kf: KeyFile, keyPath: string, conn: ConnectOptions): Promise<string | null> {
  const client = new SwitchboardClient({ ...conn, key: kf, userAgent: "switchboard-cli", reconnect: false, autoAck: false });
  try {
    const s = secureClient(client, statePathFor(keyPath), ["message"]);
    const done = published(s);
    await client.connect();
    await done;
    s.close();
    return null;
  } catch (e) {
    return explain(e, conn).message;
  } finally {
    await client.close();
  }
}

/** A state file left from an earlier device would be refused (it belongs to another device): say so before the server creates one. */
function refuseStaleState(keyPath: string): void {
  const state = statePathFor(keyPath);
  if (existsSync(state)) throw new Error(`${state} exists already; it is the end-to-end state of an earlier device. Move it away, or pass --key with a new file name`);
}

/** The sentence a person reads for an `undecryptable` reason (crypto/session.ts, crypto/senderkeys.ts). */
function whyUndecryptable(reason: string): string {
  switch (reason) {
    case "bad_envelope":
    case "bad_version":
      return "it was not end-to-end encrypted (sent with --plain?), or by a newer client";
    case "notice:no_keys":
      return "the sender found no end-to-end keys for this device";
    case "no_session":
      return "this device has no session with the sender's (its end-to-end state was replaced or lost?)";
    case "bad_mac":
      return "it failed authentication: altered on the way, or not meant for this device's session";
    case "no_sender_key":
      return "the sender's group key has not arrived here";
    default:
      return reason;
  }
}

const codeChanged = (e: IdentityChange, how: string) =>
  `security code with ${e.account} changed: ${e.account}'s device ${e.device} has new keys; ${how}`;

const plural = (n: number, one: string) => `${one}${n === 1 ? "" : "s"}`;

/** "device 3 added, device 2 removed" */
function deviceChanges(e: DevicesChange): string {
  const part = (ds: number[], what: string) => (ds.length ? [`${plural(ds.length, "device")} ${ds.join(", ")} ${what}`] : []);
  return [...part(e.added, "added"), ...part(e.removed, "removed")].join(", ");
}

/** The warning for a changed device list: the safety number changed, and who may now read what is sent. */
function devicesChangedLine(e: DevicesChange, me: string, how: string): string {
  if (e.account === me) return `your account's devices changed (${deviceChanges(e)}): your security codes changed; ${how}`;
  return `security code with ${e.account} changed: ${e.account}'s devices changed (${deviceChanges(e)}), and what you send goes to its devices; ${how}`;
}

/** What a device is told when its own account gains or loses a device. */
function deviceEventLine(ev: DeviceEvent, keyPath: string): string {
  if (ev.op === "revoked") return `device ${ev.device} of your account was revoked`;
  return `a new device was linked to your account: device ${ev.device}${ev.name !== undefined ? ` "${ev.name}"` : ""}; if that was not you, revoke it (switchboard device revoke --key ${keyPath} --device ${ev.device})`;
}

const undecryptableLine = (u: Undecryptable) =>
  `  ✗ a message from ${u.from} (device ${u.fromDevice}) could not be decrypted: ${whyUndecryptable(u.reason)}`;

/** Twelve groups of five digits in three rows, as Signal shows a safety number. */
function safetyRows(n: string): string[] {
  const g = formatSafetyNumber(n).split(" ");
  return [0, 4, 8].map((i) => g.slice(i, i + 4).join(" "));
}

/** The safety number with `account`, or an error a person can act on. */
async function safetyOf(s: SecureClient, account: string): Promise<string> {
  try {
    return await s.safetyNumber(account);
  } catch (e) {
    if (/no identity keys/.test((e as Error).message)) {
      throw new Error(
        `${account === s.client.account ? "your account" : account} has no device with end-to-end keys yet
  a device publishes them when it enrolls or links, or on its next listen, chat or send (not with --plain)`,
      );
    }
    throw e;
  }
}

/** Devices of `account` (ours excluded) that have no end-to-end keys: an encrypted send gives them a notice, not the message. */
async function withoutKeys(c: SwitchboardClient, account: string): Promise<number[]> {
  return (await c.devices(account)).filter((d) => !(account === c.account && d === c.device) && c.keyVersion(account, d) === 0);
}

/** A group id as typed: with its # (quoted in the shell) or without. */
function groupArg(g: string, usage: string): string {
  const id = g.startsWith("#") ? g : `#${g}`;
  if (!GROUP_ID_RE.test(id)) throw new UsageError(`${JSON.stringify(g)} is not a group id (# and 1..31 of a-z 0-9, as \`group create\` and \`group list\` print them)`, usage);
  return id;
}

export async function runClientCommand(name: string, args: Args): Promise<number> {
  const f = args.flags;
  const { usage, flags, args: [min, max] } = COMMANDS[name]!;
  checkFlags(name, f, flags, usage);
  const rest = args.positionals.slice(name.split(" ").length);
  if (rest.length < min || rest.length > max) {
    throw new UsageError(rest.length > max ? `${name}: unexpected argument ${JSON.stringify(rest[max])}` : `${name}: missing argument`, usage);
  }
  const json = f["--json"] === "true";
  switch (name) {
    case "user add":
    case "user code": {
      const account = rest[0]!;
      if (isInternalAccount(account)) throw new Error(`account names starting with "switchboard." are reserved for the server's own use (its readiness canary)\n  choose another name`);
      const cfg = loadConfig({ flags: f });
      if (!existsSync(cfg.dataDir)) {
        throw new Error(
          `data directory ${cfg.dataDir} does not exist\n  run this beside the server (it creates ./data when it starts: npm start, or switchboard serve), or pass --data-dir DIR of the server`,
        );
      }
      const store = new SqliteAccountStore(cfg.dataDir, cfg.queue.durability);
      try {
        const r = name === "user add" ? store.createAccount(account, cfg.auth.enrollCodeTtl) : store.newEnrollCode(account, cfg.auth.enrollCodeTtl);
        if (!r.ok) {
          const hint = r.reason === "unknown_user" ? "\n  create it with `switchboard user add NAME`" : /exists/.test(r.message) ? "\n  for another enrollment code of it, run `switchboard user code NAME`" : "";
          throw new Error(r.message + hint);
        }
        const ttl = cfg.auth.enrollCodeTtl;
        if (json) out({ account, code: r.value.code, expires_in_s: ttl });
        else {
          const valid = ttl % 3600 === 0 ? `${ttl / 3600} h` : ttl % 60 === 0 ? `${ttl / 60} min` : `${ttl} s`;
          console.log(`${name === "user add" ? "created account" : "new enrollment code for"} ${account}`);
          console.log(`enrollment code (one use, valid ${valid}): ${r.value.code}`);
          console.log(`enroll a device with:\n  switchboard device enroll --user ${account} --code ${r.value.code}`);
        }
      } finally {
        store.close();
      }
      return 0;
    }
    case "device enroll": {
      const account = need(f, "--user", "the account to enroll a device for", usage);
      const code = need(f, "--code", "the one-time code printed by `switchboard user add`", usage);
      const keyPath = f["--key"] ?? `${account}.key`;
      if (existsSync(keyPath)) throw new Error(`${keyPath} exists already; it is the key of an enrolled device. Pass --key with a new file name`);
      refuseStaleState(keyPath);
      const conn = connectOptions(f);
      const key = generateDeviceKey();
      let r;
      try {
        r = await enrollDevice({ ...conn, account, code, key, name: f["--name"] ?? "cli" });
      } catch (e) {
        throw explain(e, conn);
      }
      const kf = keyToFile(key, r.account, r.device, serverOf(conn));
      writeKeyFile(keyPath, kf);
      const unpublished = await publishNewDevice(kf, keyPath, conn);
      if (json) out({ account: r.account, device: r.device, key: keyPath });
      else console.log(`enrolled ${r.account} device ${r.device}; key written to ${keyPath}`);
      if (unpublished) console.error(`switchboard: warning: the device's end-to-end keys are not published yet (${unpublished}); its next listen, chat or send publishes them`);
      return 0;
    }
    case "device link": {
      if (f["--approve"] !== undefined) {
        const { client } = await openClient(f, usage, { reconnect: false, autoAck: false });
        try {
          const r = await client.request<{ d: number }>("link.approve", { code: f["--approve"] });
          if (json) out({ approved: true, device: r.d });
          else console.log(`approved: ${client.account} has a new device ${r.d}`);
        } finally {
          await client.close();
        }
        return 0;
      }
      const account = need(f, "--user", "the account to link this new device to (or --approve CODE on an existing device)", usage);
      const keyPath = f["--key"] ?? `${account}-linked.key`;
      if (existsSync(keyPath)) throw new Error(`${keyPath} exists already; it is the key of an enrolled device. Pass --key with a new file name`);
      refuseStaleState(keyPath);
      const conn = connectOptions(f);
      const key = generateDeviceKey();
      let r;
      try {
        r = await linkDevice({
          ...conn, account, key, name: f["--name"] ?? "cli",
          onCode: (code, exp) => {
            if (json) out({ event: "linkcode", code, expires: exp });
            else console.log(`on a device of ${account}, run:\n  switchboard device link --approve ${code} --key <its key file>\nwaiting for approval (until ${localTime(exp)})...`);
          },
        });
      } catch (e) {
        throw explain(e, conn);
      }
      const kf = keyToFile(key, r.account, r.device, serverOf(conn));
      writeKeyFile(keyPath, kf);
      const unpublished = await publishNewDevice(kf, keyPath, conn);
      if (json) out({ event: "linked", account: r.account, device: r.device, key: keyPath });
      else console.log(`linked ${r.account} device ${r.device}; key written to ${keyPath}`);
      if (unpublished) console.error(`switchboard: warning: the device's end-to-end keys are not published yet (${unpublished}); its next listen, chat or send publishes them`);
      return 0;
    }
    case "device list": {
      const { client } = await openClient(f, usage, { reconnect: false, autoAck: false });
      try {
        const r = await client.request<{ u: string; devices: { d: number; name?: string; created: number }[] }>("devices", f["--user"] ? { u: f["--user"] } : {});
        if (json) out(r);
        else {
          for (const d of r.devices) {
            const mine = d.d === client.device && r.u === client.account ? "  (this one)" : "";
            console.log(`${r.u} device ${d.d}${d.name !== undefined ? ` "${d.name}"` : ""}, since ${localTime(d.created)}${mine}`);
          }
        }
      } finally {
        await client.close();
      }
      return 0;
    }
    case "device revoke": {
      const raw = need(f, "--device", "the device id to revoke (see `device list`)", usage);
      const d = Number(raw);
      if (!/^\d+$/.test(raw) || d < 1) throw new UsageError(`--device must be a device id (a number from \`device list\`), got ${JSON.stringify(raw)}`, usage);
      let revokedSelf = false;
      const { client } = await openClient(f, usage, {
        reconnect: false, autoAck: false,
        setup: (c) => c.on("close", (x) => (revokedSelf ||= x.reason === "revoked")),
      });
      try {
        await client.request("device.revoke", { d });
      } catch (e) {
        // Revoking the device we are: the server closes this very connection, maybe before it answers.
        if (!(d === client.device && revokedSelf)) throw explain(e, client.opts);
      } finally {
        await client.close();
      }
      if (json) out({ revoked: d, account: client.account });
      else console.log(`revoked ${client.account} device ${d}${d === client.device ? " (this one: its key file no longer works)" : ""}`);
      return 0;
    }
    case "send": {
      const to = need(f, "--to", "the recipient account, or a group id", usage);
      const plain = f["--plain"] === "true";
      const group = isGroupId(to);
      if (group) groupArg(to, usage);
      if (rest.length === 0 && process.stdin.isTTY) console.error(`reading messages for ${to} from stdin, one per line; ctrl-d to finish`);
      let secure: SecureClient | null = null;
      const warn = (m: string) => console.error(`switchboard: warning: ${m}`);
      const { client } = await openClient(f, usage, {
        reconnect: false,
        autoAck: false,
        // Not decrypting what arrives meanwhile: it stays queued, and decryptable, for the next listen or chat.
        setup: (c) => (secure = plain ? null : secureClient(c, statePathFor(f["--key"]!), ["message"])),
      });
      const s = secure as SecureClient | null;
      try {
        if (s) {
          s.on("identityChanged", (e) => out({ event: "security_code_changed", ...e }));
          s.on("devicesChanged", (e) => out({ event: "devices_changed", ...e }));
          s.on("error", (e) => warn(e.message));
          await published(s).catch((e) => {
            throw explain(e, client.opts);
          });
        }
        if (to === client.account && (await client.devices(to)).every((d) => d === client.device)) {
          throw new Error(`${to} has no other device to send to (a message to your own account goes to its other devices)`);
        }
        const warned = new Set<number>();
        const send = async (text: string) => {
          try {
            const sent = s ? await s.send(to, text) : group ? await client.sendGroup(to, text) : await client.send(to, text);
            out({ event: "sent", ...sent, encrypted: s !== null });
          } catch (e) {
            throw explain(e, client.opts);
          }
          if (s && !group) {
            for (const d of await withoutKeys(client, to)) {
              if (warned.has(d)) continue;
              warned.add(d);
              warn(`${to} device ${d} has no end-to-end keys, so it got a notice instead of the message (a device publishes its keys when it enrolls or links, or on its next listen or chat)`);
            }
          }
        };
        if (rest.length) await send(rest.join(" "));
        else for await (const line of createInterface({ input: process.stdin })) if (line.trim()) await send(line);
      } finally {
        s?.close();
        await client.close();
      }
      return 0;
    }
    case "listen": {
      let quitting = false;
      let ended: { reason: string; message?: string } | null = null;
      const stop = interrupted();
      const lost = Promise.withResolvers<void>();
      const dec = new TextDecoder("utf-8", { fatal: false });
      const noAck = f["--no-ack"] === "true";
      let peekDir: string | null = null;
      const { client } = await openClient(f, usage, {
        reconnect: true,
        autoAck: !noAck,
        setup: (c) => {
          const emit = (o: object) => !quitting && out(o);
          if (f["--plain"] === "true") {
            c.on("message", (m) => emit({ event: "message", conversation: m.conversation, from: m.from, device: m.fromDevice, to: m.to, id: m.id, seq: m.seq, ts: m.ts, sync: m.sync, group: isGroupId(m.to), encrypted: false, text: dec.decode(m.payload) }));
          } else {
            const statePath = statePathFor(f["--key"]!);
            let reader: SecureClient;
            let keeper: SecureClient;
            if (!noAck) reader = keeper = secureClient(c, statePath);
            else {
              // A peek: the device's state publishes and refills keys but decrypts nothing; a scratch copy
              // decrypts (and is thrown away), so the next listen decrypts the same messages again. Cost: a
              // message made with a one-time prekey uploaded during this peek shows as undecryptable
              // (unknown_prekey) here, and decrypts on the next listen.
              keeper = secureClient(c, statePath, ["message"]);
              peekDir = mkdtempSync(join(tmpdir(), "switchboard-peek-")); // mode 0700
              copyFileSync(statePath, join(peekDir, "state.e2e"));
              reader = secureClient(c, join(peekDir, "state.e2e"), ["ready", "keys", "group", "device"]);
            }
            reader.on("message", (m) => emit({ event: "message", conversation: m.conversation, from: m.from, device: m.fromDevice, to: m.to, id: m.id, seq: m.seq, ts: m.ts, sync: m.sync, group: m.group, encrypted: true, text: m.text }));
            reader.on("undecryptable", (u) => emit({ event: "undecryptable", conversation: u.conversation, from: u.from, device: u.fromDevice, id: u.id, seq: u.seq, reason: u.reason }));
            for (const s of new Set([reader, keeper])) {
              s.on("identityChanged", (e) => emit({ event: "security_code_changed", ...e }));
              s.on("devicesChanged", (e) => emit({ event: "devices_changed", ...e }));
              s.on("error", (e) => emit({ event: "error", message: e.message }));
            }
            // A refusal is already reported through the "error" event above.
            keeper.whenPublished().then(() => emit({ event: "keys_published", kv: keeper.e2e.kv }), () => {});
          }
          c.on("group", (g) => emit({ event: "group", ...g }));
          c.on("device", (d) => emit({ event: "device", ...d }));
          c.on("receipt", (r) => emit({ event: "receipt", ...r }));
          c.on("typing", (t) => emit({ event: "typing", ...t }));
          c.on("ready", (r) => emit({ event: "ready", ...r }));
          c.on("reconnecting", (r) => emit({ event: "reconnecting", ...r }));
          c.on("error", (e) => emit({ event: "error", code: e.code, message: e.message }));
          c.on("close", (x) => {
            emit({ event: "close", ...x });
            // A final close after the first login (revoked, replaced): the session is over.
            if (!quitting && !x.willReconnect && c.opts.reconnect) {
              ended = x;
              lost.resolve();
            }
          });
        },
      }).catch((e) => {
        stop.cancel();
        if (peekDir) rmSync(peekDir, { recursive: true, force: true });
        throw e;
      });
      await Promise.race([stop.done, lost.promise]);
      quitting = true;
      stop.cancel();
      await client.close();
      if (peekDir) rmSync(peekDir, { recursive: true, force: true });
      if (ended) {
        const e = ended as { reason: string; message?: string };
        throw explain(new ServerError(e.reason, e.message ?? "the connection closed"), client.opts);
      }
      return 0;
    }
    case "chat":
      return chat(f, usage);
    case "safety": {
      const account = rest[0]!;
      if (isGroupId(account)) throw new UsageError("a safety number is between two accounts; for a group, compare it with each member (`group info` lists them)", usage);
      let secure: SecureClient | null = null;
      const { client } = await openClient(f, usage, {
        reconnect: false,
        autoAck: false,
        setup: (c) => (secure = secureClient(c, statePathFor(f["--key"]!), ["message"])),
      });
      const s = secure! as SecureClient;
      const changed: IdentityChange[] = [];
      const devicesChanged: DevicesChange[] = [];
      s.on("identityChanged", (e) => changed.push(e));
      s.on("devicesChanged", (e) => devicesChanged.push(e));
      try {
        await published(s);
        const n = await safetyOf(s, account);
        if (json) out({ account: client.account, with: account, safety_number: n, changed, devices_changed: devicesChanged });
        else {
          for (const e of changed) console.log(codeChanged(e, "compare the number below with them again"));
          for (const e of devicesChanged) console.log(devicesChangedLine(e, client.account, "compare the number below with them again"));
          console.log(`safety number of ${client.account} and ${account}:`);
          for (const row of safetyRows(n)) console.log(`  ${row}`);
          console.log(`${account} sees the same digits (\`switchboard safety ${client.account}\`) unless someone sits between you; compare them in person or over a channel you trust`);
        }
      } catch (e) {
        throw explain(e, client.opts);
      } finally {
        s.close();
        await client.close();
      }
      return 0;
    }
    case "group create":
    case "group add":
    case "group remove":
    case "group leave":
    case "group list":
    case "group info":
      return groupCommand(name, rest, f, usage, json);
    case "reload":
      return reload(f, json);
    case "trace":
      return traceCommand(f, rest, json);
  }
  throw new Error(`unknown command ${name}`);
}

/** The `group` subcommands: plain requests through the SDK (membership is the server's; messages are end-to-end encrypted by send and chat). */
async function groupCommand(name: string, rest: string[], f: Record<string, string>, usage: string, json: boolean): Promise<number> {
  const { client } = await openClient(f, usage, { reconnect: false, autoAck: false });
  try {
    switch (name) {
      case "group create": {
        const [title, ...members] = rest as [string, ...string[]];
        const r = await client.createGroup(title, members);
        if (json) out({ group: r.g, name: title, members: [client.account, ...members] });
        else {
          console.log(`created group ${r.g} "${title}" with ${[client.account, ...members].join(", ")}; you are its admin`);
          console.log(`write to it with:\n  switchboard chat --key ${f["--key"]} --to '${r.g}'`);
        }
        return 0;
      }
      case "group add":
      case "group remove": {
        const g = groupArg(rest[0]!, usage);
        const r = name === "group add" ? await client.addMembers(g, rest.slice(1)) : await client.removeMembers(g, rest.slice(1));
        if (json) out({ group: g, [name === "group add" ? "added" : "removed"]: r.m });
        else console.log(`${name === "group add" ? "added to" : "removed from"} ${g}: ${r.m.join(", ")}`);
        return 0;
      }
      case "group leave": {
        const g = groupArg(rest[0]!, usage);
        await client.leaveGroup(g);
        if (json) out({ group: g, left: true });
        else console.log(`left ${g}`);
        return 0;
      }
      case "group list": {
        const r = await client.groups();
        if (json) out(r);
        else {
          for (const g of r.groups) console.log(`${g.g} "${g.name}", ${g.n} member${g.n === 1 ? "" : "s"}`);
          if (r.groups.length === 0) console.log("no groups");
        }
        return 0;
      }
      case "group info": {
        const info = await client.groupInfo(groupArg(rest[0]!, usage));
        if (json) out(info);
        else {
          console.log(`${info.g} "${info.name}", created ${localTime(info.created)} by ${info.creator}`);
          for (const m of info.members) console.log(`  ${m.u}${m.admin ? " (admin)" : ""}${m.u === client.account ? "  (you)" : ""}`);
        }
        return 0;
      }
    }
    throw new Error(`unknown command ${name}`);
  } catch (e) {
    throw explain(e, client.opts);
  } finally {
    await client.close();
  }
}

/** One module's line of a reload report, as the server's POST /admin/reload returns it (src/core/loader.ts, ModuleResult). */
type ReloadLine =
  | { module: string; result: "kept"; version: string; note?: string }
  | { module: string; result: "reloaded"; from: string; to: string }
  | { module: string; result: "loaded"; version: string }
  | { module: string; result: "failed"; stage: string; error: string; version: string | null };

/**
 * `switchboard reload`: asks the running server (POST /admin/reload on its HTTP
 * port, loopback only) to re-import its changed modules, and prints what became
 * of each. Exit 1 if any module failed (it keeps running its old version).
 */
async function reload(f: Record<string, string>, json: boolean): Promise<number> {
  const cfg = loadConfig({ flags: f });
  const { port } = cfg.http;
  if (port === -1) {
    throw new Error("the server's HTTP port is off (http.port = -1), and reload goes through it\n  turn it on, or send the server SIGHUP (kill -HUP PID) and read the result in its log");
  }
  if (port === 0) {
    throw new Error('http.port is 0 (the server picked a free port when it started)\n  pass --http-port N with the "http" port of the server\'s "listening" line');
  }
  // A wildcard listen address is reached on loopback, which is where reload is allowed from.
  const host = cfg.http.host === "0.0.0.0" || cfg.http.host === "" ? "127.0.0.1" : cfg.http.host === "::" ? "::1" : cfg.http.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/admin/reload`;
  let res: Response;
  try {
    res = await fetch(url, { method: "POST" });
  } catch (e) {
    throw new Error(`cannot reach the server at ${url}: ${(e as Error).message}\n  is it running? Pass the --config, or --http-port, it runs with`);
  }
  const body = await res.text();
  if (res.status === 403) throw new Error(`the server refused: ${body.trim()}\n  run switchboard reload on the server's machine, with http.host a loopback address or a wildcard`);
  if (!res.ok) throw new Error(`the server answered ${res.status} at ${url}: ${body.trim()}`);
  const report = JSON.parse(body) as { ok: boolean; dir: string | null; modules: ReloadLine[] };
  if (json) out(report);
  else {
    const w = Math.max(...report.modules.map((m) => m.module.length), 6);
    for (const m of report.modules) {
      const name = m.module.padEnd(w);
      switch (m.result) {
        case "kept":
          console.log(`${name}  kept      ${m.version}${m.note ? `  (${m.note})` : ""}`);
          break;
        case "reloaded":
          console.log(`${name}  reloaded  ${m.from} -> ${m.to}`);
          break;
        case "loaded":
          console.log(`${name}  loaded    ${m.version} (new)`);
          break;
        case "failed":
          console.log(`${name}  failed    ${m.stage}: ${m.error}`);
          console.log(`${" ".repeat(w)}            ${m.version ? `still running ${m.version}` : "not running"}`);
          break;
      }
    }
    if (report.modules.length === 0) console.log("no modules loaded");
  }
  return report.ok ? 0 : 1;
}

/**
 * An interactive conversation with an account or a group: typed lines are
 * sent (end-to-end encrypted unless --plain), incoming lines shown with
 * ticks, everything shown is marked read, and `/safety` prints the safety
 * number. On a terminal it keeps a prompt under the incoming lines; with
 * --lines, or when stdin or stdout is not a terminal, it prints plain lines
 * (one message per input line).
 */
async function chat(f: Record<string, string>, usage: string): Promise<number> {
  const to = need(f, "--to", "who to chat with: an account, or a group id", usage);
  const group = isGroupId(to);
  if (group) groupArg(to, usage);
  const plain = f["--plain"] === "true";
  const tty = f["--lines"] !== "true" && process.stdin.isTTY === true && process.stdout.isTTY === true;
  const dec = new TextDecoder();
  let rl: ReturnType<typeof createInterface> | null = null;
  let quitting = false;
  let ended: { reason: string; message?: string } | null = null;
  let before: string[] | null = []; // what arrives before the greeting is printed after it
  const show = (line: string) => {
    if (quitting) return;
    if (before) before.push(line);
    else if (tty && rl) {
      process.stdout.write(`\r\x1b[K${line}\n`);
      rl.prompt(true);
    } else process.stdout.write(line + "\n");
  };
  let inflight = 0; // sends not yet resolved: a delivery receipt meanwhile may be for one of them
  const ours = new Set<number>(); // seqs of what this chat sent: their delivery receipts are shown
  const delivered = new Set<number>();
  // A delivery receipt can overtake the send's resolution (the server may deliver before its group commit,
  // and an encrypted send resolves after its resends): held here until the send tells whether the seq is ours.
  const early = new Set<number>();
  const readShown = new Map<string, number>(); // group: the highest seq each member was shown to have read
  let typingShown = false;
  const announced = new Set<string>(); // `linked:3`, `revoked:3`: own-account device changes the server told of
  let secure: SecureClient | null = null;
  const { client } = await openClient(f, usage, {
    reconnect: true,
    autoAck: true,
    setup: (c) => {
      const incoming = (m: { conversation: string; from: string; fromDevice: number; sync: boolean; seq: number; text: string }) => {
        const who = m.sync ? `you (device ${m.fromDevice})` : m.from;
        if (m.conversation !== to) return show(`[${m.conversation}] ${who}: ${m.text}`);
        if (!m.sync) typingShown = false;
        show(`${who}: ${m.text}`);
        // After the acknowledgement (queued by the SDK once this handler returns): delivered, then read.
        if (!m.sync) setImmediate(() => c.markRead(to, m.seq));
      };
      if (plain) c.on("message", (m) => incoming({ ...m, text: dec.decode(m.payload) }));
      else {
        const s = (secure = secureClient(c, statePathFor(f["--key"]!)));
        s.on("message", incoming);
        s.on("identityChanged", (e) => show(`  ! ${codeChanged(e, `type /safety${e.account === to ? "" : ` ${e.account}`} and compare the number with ${e.account}`)}`));
        s.on("devicesChanged", (e) => {
          // Our own new device was announced by the server already (below): the same news once is enough.
          if (e.account === c.account && e.added.every((d) => announced.has(`linked:${d}`)) && e.removed.every((d) => announced.has(`revoked:${d}`))) return;
          const peer = e.account === c.account ? (group ? "" : to) : e.account;
          show(`  ! ${devicesChangedLine(e, c.account, peer ? `type /safety${peer === to ? "" : ` ${peer}`} and compare the number with ${peer}` : "type /safety MEMBER and compare the numbers")}`);
        });
        s.on("undecryptable", (u) => show(undecryptableLine(u)));
        s.on("error", (e) => show(`  ! ${e.message}`));
      }
      c.on("device", (ev) => {
        announced.add(`${ev.op}:${ev.device}`);
        show(`  ! ${deviceEventLine(ev, f["--key"]!)}`);
      });
      c.on("receipt", (r) => {
        if (r.with !== to) return;
        const kind: string = r.kind;
        if (group) {
          // Per member, not per device; deliveries to every device of every member would drown the conversation.
          if (r.account === c.account) return;
          if (kind === "read" && r.seq > (readShown.get(r.account) ?? 0)) {
            readShown.set(r.account, r.seq);
            show(`  ✓✓ ${r.account} read up to #${r.seq}`);
          } else if (kind === "exp") show(`  ✗ #${r.seq} expired before ${r.account}'s device ${r.device} received it`);
          return;
        }
        if (r.account !== to) return;
        if (kind === "read") show(`  ✓✓ read up to #${r.seq}`);
        else if (kind === "exp") show(`  ✗ #${r.seq} expired before ${to}'s device ${r.device} received it`);
        else if (kind !== "dlv" || delivered.has(r.seq)) return;
        else if (ours.has(r.seq)) {
          delivered.add(r.seq);
          show(`  ✓✓ delivered #${r.seq}`);
        } else if (inflight > 0) {
          if (early.size > 1000) early.clear();
          early.add(r.seq);
        }
      });
      c.on("typing", (t) => {
        if (group || t.account !== to || t.state !== "typing" || typingShown) return;
        typingShown = true;
        show(`  ${to} is typing…`);
      });
      c.on("close", (x) => {
        if (quitting) return;
        if (x.willReconnect) return show(`  (connection lost: ${x.reason}; reconnecting)`);
        if (c.opts.reconnect) {
          ended = x;
          rl?.close();
        }
      });
      c.on("ready", () => {
        if (c.opts.reconnect) show("  (reconnected)");
      });
    },
  });
  const s = secure as SecureClient | null;
  rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty, prompt: `${client.account} > ` });
  const stop = interrupted();
  void stop.done.then(() => rl?.close());
  rl.on("SIGINT", () => rl?.close()); // ctrl-c on a terminal: leave like ctrl-d
  if (tty && !group) {
    // Tell the peer we are typing, at most every few seconds while keys are pressed.
    let last = 0;
    process.stdin.on("keypress", (_s: string, key: { name?: string } | undefined) => {
      if (key?.name === "return" || Date.now() - last < 3000) return;
      last = Date.now();
      client.typing(to);
    });
  }
  const greeting = tty
    ? `chatting with ${to} as ${client.account} (device ${client.device}); type a line and press enter to send, ctrl-d to quit`
    : `chatting with ${to} as ${client.account} (device ${client.device}); one message per input line`;
  process.stdout.write(greeting + "\n");
  process.stdout.write(
    plain
      ? "  not encrypted (--plain): the server, and whoever runs it, can read these messages\n"
      : `  end-to-end encrypted; /safety${group ? " MEMBER" : ""} prints the safety number to compare with ${group ? "a member" : to}\n`,
  );
  const queued = before!;
  before = null;
  for (const line of queued) show(line);
  if (tty) rl.prompt();
  const warned = new Set<number>();
  const safety = (arg: string) => {
    const who = arg || (group ? "" : to);
    if (!s) return show("  /safety needs end-to-end encryption: chat without --plain");
    if (!who || isGroupId(who)) return show("  in a group, name the member: /safety ACCOUNT");
    void safetyOf(s, who).then(
      (n) => {
        show(`  safety number of ${client.account} and ${who}:`);
        for (const row of safetyRows(n)) show(`    ${row}`);
        show(`  ${who} sees the same digits unless someone sits between you`);
      },
      (e: Error) => show(`  ✗ no safety number: ${explain(e, client.opts).message}`),
    );
  };
  const pending = new Set<Promise<Sent | void>>();
  for await (const line of rl) {
    const text = line.trim();
    if (text === "/safety" || text.startsWith("/safety ")) safety(text.slice(7).trim());
    else if (text) {
      inflight++;
      const p: Promise<Sent | void> = (s ? s.send(to, text) : group ? client.sendGroup(to, text) : client.send(to, text))
        .then(async (sent) => {
          ours.add(sent.seq);
          show(`  ✓ sent #${sent.seq}`);
          if (early.delete(sent.seq)) {
            delivered.add(sent.seq);
            show(`  ✓✓ delivered #${sent.seq}`);
          }
          if (s && !group) {
            for (const d of await withoutKeys(client, to)) {
              if (warned.has(d)) continue;
              warned.add(d);
              show(`  ! ${to}'s device ${d} has no end-to-end keys: it gets a notice instead of your messages`);
            }
          }
        })
        .catch((e: Error) => show(`  ✗ not sent: ${explain(e, client.opts).message}`))
        .finally(() => inflight--);
      pending.add(p);
      void p.finally(() => pending.delete(p));
    }
    if (tty) rl.prompt();
  }
  if (pending.size && !ended) {
    const all = Promise.allSettled([...pending]);
    const slow = setTimeout(() => show(`  (waiting for ${pending.size} message${pending.size === 1 ? "" : "s"} to be sent; ctrl-c to quit anyway)`), 500);
    await Promise.race([all, stop.done]);
    clearTimeout(slow);
  }
  stop.cancel();
  quitting = true;
  if (tty) process.stdout.write("\n"); // leave the shell prompt on a line of its own
  s?.close();
  await client.close();
  if (ended) {
    const e = ended as { reason: string; message?: string };
    throw explain(new ServerError(e.reason, e.message ?? "the connection closed"), client.opts);
  }
  return 0;
}

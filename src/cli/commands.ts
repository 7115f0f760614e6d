/**
 * The client and administration subcommands. Administration (`user add`,
 * `user code`) writes the data directory directly (SQLite copes with the
 * server running at the same time); everything else talks to a running
 * server through the SDK, as a device, with its key file.
 */
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { checkFlags, UsageError, type Args } from "./args.ts";
import { CONFIG_FLAGS, loadConfig } from "../core/config.ts";
import { SqliteAccountStore } from "../store/accounts.ts";
import { enrollDevice, linkDevice, newMessageId, ServerError, SwitchboardClient, type ConnectOptions, type Sent } from "../client/client.ts";
import { generateDeviceKey, keyToFile, readKeyFile, writeKeyFile, type KeyFile } from "../client/keys.ts";

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
  send: spec("switchboard send --key FILE --to NAME [TEXT...]", [...CONNECTION, "--key", "--to"], [0, Infinity]),
  listen: spec("switchboard listen --key FILE [--no-ack]", [...CONNECTION, "--key", "--no-ack"]),
  chat: spec("switchboard chat --key FILE --to NAME [--plain]", [...CONNECTION, "--key", "--to", "--plain"]),
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

messages
  send --key FILE --to NAME [TEXT...]   send TEXT, or each line of stdin; one JSON line per message sent
  listen --key FILE [--no-ack]          print every event (message, receipt, ...) as a JSON line
  chat --key FILE --to NAME [--plain]   an interactive conversation in the terminal

connection flags (device, send, listen, chat)
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
  const client = new SwitchboardClient({ ...conn, key: kf, userAgent: "switchboard-cli", reconnect: false, autoAck: o.autoAck });
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
      const conn = connectOptions(f);
      const key = generateDeviceKey();
      let r;
      try {
        r = await enrollDevice({ ...conn, account, code, key, name: f["--name"] ?? "cli" });
      } catch (e) {
        throw explain(e, conn);
      }
      writeKeyFile(keyPath, keyToFile(key, r.account, r.device, serverOf(conn)));
      if (json) out({ account: r.account, device: r.device, key: keyPath });
      else console.log(`enrolled ${r.account} device ${r.device}; key written to ${keyPath}`);
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
      writeKeyFile(keyPath, keyToFile(key, r.account, r.device, serverOf(conn)));
      if (json) out({ event: "linked", account: r.account, device: r.device, key: keyPath });
      else console.log(`linked ${r.account} device ${r.device}; key written to ${keyPath}`);
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
      const to = need(f, "--to", "the recipient account", usage);
      if (rest.length === 0 && process.stdin.isTTY) console.error(`reading messages for ${to} from stdin, one per line; ctrl-d to finish`);
      const { client } = await openClient(f, usage, { reconnect: false, autoAck: false });
      try {
        if (to === client.account && (await client.devices(to)).every((d) => d === client.device)) {
          throw new Error(`${to} has no other device to send to (a message to your own account goes to its other devices)`);
        }
        const send = async (text: string) => {
          try {
            out({ event: "sent", ...(await client.send(to, text)) });
          } catch (e) {
            throw explain(e, client.opts);
          }
        };
        if (rest.length) await send(rest.join(" "));
        else for await (const line of createInterface({ input: process.stdin })) if (line.trim()) await send(line);
      } finally {
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
      const { client } = await openClient(f, usage, {
        reconnect: true,
        autoAck: f["--no-ack"] !== "true",
        setup: (c) => {
          const emit = (o: object) => !quitting && out(o);
          c.on("message", (m) => emit({ event: "message", conversation: m.conversation, from: m.from, device: m.fromDevice, to: m.to, id: m.id, seq: m.seq, ts: m.ts, sync: m.sync, text: dec.decode(m.payload) }));
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
        throw e;
      });
      await Promise.race([stop.done, lost.promise]);
      quitting = true;
      stop.cancel();
      await client.close();
      if (ended) {
        const e = ended as { reason: string; message?: string };
        throw explain(new ServerError(e.reason, e.message ?? "the connection closed"), client.opts);
      }
      return 0;
    }
    case "chat":
      return chat(f, usage);
  }
  throw new Error(`unknown command ${name}`);
}

/**
 * An interactive conversation: typed lines are sent, incoming lines shown
 * with ticks, everything shown is marked read. On a terminal it keeps a
 * prompt under the incoming lines; with --plain, or when stdin or stdout is
 * not a terminal, it prints plain lines (one message per input line).
 */
async function chat(f: Record<string, string>, usage: string): Promise<number> {
  const to = need(f, "--to", "who to chat with", usage);
  const tty = f["--plain"] !== "true" && process.stdin.isTTY === true && process.stdout.isTTY === true;
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
  const mine = new Set<string>(); // ids this chat sent and that are not yet `sent`
  const ours = new Set<number>(); // seqs of what this chat sent: their delivery receipts are shown
  const delivered = new Set<number>();
  // A delivery receipt can overtake `sent` (the server may deliver before its group commit):
  // held here until `sent` tells whether the seq is ours.
  const early = new Set<number>();
  let typingShown = false;
  const { client } = await openClient(f, usage, {
    reconnect: true,
    autoAck: true,
    setup: (c) => {
      c.on("message", (m) => {
        const text = dec.decode(m.payload);
        const who = m.sync ? `you (device ${m.fromDevice})` : m.from;
        if (m.conversation !== to) return show(`[${m.conversation}] ${who}: ${text}`);
        if (!m.sync) typingShown = false;
        show(`${who}: ${text}`);
        // After the acknowledgement (queued by the SDK once this handler returns): delivered, then read.
        if (!m.sync) setImmediate(() => c.markRead(to, m.seq));
      });
      c.on("sent", (s) => {
        if (!mine.delete(s.id)) return;
        ours.add(s.seq);
        show(`  ✓ sent #${s.seq}`);
        if (early.delete(s.seq)) {
          delivered.add(s.seq);
          show(`  ✓✓ delivered #${s.seq}`);
        }
      });
      c.on("receipt", (r) => {
        if (r.with !== to || r.account !== to) return;
        const kind: string = r.kind;
        if (kind === "read") show(`  ✓✓ read up to #${r.seq}`);
        else if (kind === "exp") show(`  ✗ #${r.seq} expired before ${to}'s device ${r.device} received it`);
        else if (kind !== "dlv" || delivered.has(r.seq)) return;
        else if (ours.has(r.seq)) {
          delivered.add(r.seq);
          show(`  ✓✓ delivered #${r.seq}`);
        } else if (mine.size > 0) {
          if (early.size > 1000) early.clear();
          early.add(r.seq);
        }
      });
      c.on("typing", (t) => {
        if (t.account !== to || t.state !== "typing" || typingShown) return;
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
  rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty, prompt: `${client.account} > ` });
  const stop = interrupted();
  void stop.done.then(() => rl?.close());
  rl.on("SIGINT", () => rl?.close()); // ctrl-c on a terminal: leave like ctrl-d
  if (tty) {
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
  const queued = before!;
  before = null;
  for (const line of queued) show(line);
  if (tty) rl.prompt();
  const pending = new Set<Promise<Sent | void>>();
  for await (const line of rl) {
    const text = line.trim();
    if (text) {
      // The `sent` event (not this promise) prints the tick: it runs in order with the receipts.
      const id = newMessageId();
      mine.add(id);
      const p: Promise<Sent | void> = client.send(to, text, { id }).catch((e: Error) => {
        mine.delete(id);
        show(`  ✗ not sent: ${explain(e, client.opts).message}`);
      });
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
  await client.close();
  if (ended) {
    const e = ended as { reason: string; message?: string };
    throw explain(new ServerError(e.reason, e.message ?? "the connection closed"), client.opts);
  }
  return 0;
}

/**
 * The client and administration subcommands. Administration (`user add`,
 * `user code`) writes the data directory directly (SQLite copes with the
 * server running at the same time); everything else talks to a running
 * server through the SDK, as a device, with its key file.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Args } from "./args.ts";
import { loadConfig } from "../core/config.ts";
import { SqliteAccountStore } from "../store/accounts.ts";
import { enrollDevice, linkDevice, SwitchboardClient, type ConnectOptions } from "../client/client.ts";
import { generateDeviceKey, keyToFile, readKeyFile, writeKeyFile, type KeyFile } from "../client/keys.ts";

export const CLIENT_USAGE = `  switchboard user add NAME                     create an account; prints a one-time enrollment code
  switchboard user code NAME                    print a new enrollment code for an account
  switchboard device enroll --user NAME --code CODE [--key FILE] [--name DEVICE]
  switchboard device link --user NAME [--key FILE] [--name DEVICE]     (new device: prints a code, waits)
  switchboard device link --approve CODE --key FILE                    (existing device approves)
  switchboard device list --key FILE [--user NAME]
  switchboard device revoke --key FILE --device N
  switchboard send --key FILE --to NAME [TEXT...]   (no TEXT: one message per line of stdin)
  switchboard listen --key FILE                      (one JSON line per event)
  switchboard chat --key FILE --to NAME
  connection flags: --host H (127.0.0.1) --port N (5222; 5223 with --tls) --tls [--ca FILE | --insecure]`;

export const CLIENT_COMMANDS = new Set([
  "user add", "user code", "device enroll", "device link", "device list", "device revoke", "send", "listen", "chat",
]);

const out = (o: unknown) => console.log(JSON.stringify(o));

function need(flags: Record<string, string>, name: string, why: string): string {
  const v = flags[name];
  if (v === undefined || v === "") throw new Error(`${name} is required: ${why}`);
  return v;
}

/** Where to connect: flags first, then what the key file remembers, then the defaults. */
function connectOptions(flags: Record<string, string>, kf?: KeyFile): ConnectOptions {
  const tls = flags["--tls"] === "true" || (flags["--tls"] === undefined && flags["--port"] === undefined && kf?.server?.tls === true);
  const host = flags["--host"] ?? kf?.server?.host ?? "127.0.0.1";
  const port = Number(flags["--port"] ?? (flags["--host"] === undefined && kf?.server ? kf.server.port : tls ? 5223 : 5222));
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`--port must be a port number, got ${flags["--port"]}`);
  if (!tls) return { host, port };
  if (flags["--insecure"] === "true") return { host, port, tls: { rejectUnauthorized: false } };
  // The development certificate the server generated, when this runs beside it.
  const caPath = flags["--ca"] ?? join(loadConfig({ flags: pick(flags, ["--data-dir", "--config"]) }).dataDir, "tls", "dev-cert.pem");
  if (flags["--ca"] !== undefined && !existsSync(caPath)) throw new Error(`--ca ${caPath} does not exist`);
  return existsSync(caPath) ? { host, port, tls: { ca: readFileSync(caPath, "utf8"), serverName: "localhost" } } : { host, port, tls: true };
}

function pick(flags: Record<string, string>, names: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (const n of names) if (flags[n] !== undefined) o[n] = flags[n]!;
  return o;
}

function serverOf(c: ConnectOptions): KeyFile["server"] {
  return { host: c.host, port: c.port, tls: c.tls !== undefined && c.tls !== false };
}

async function openClient(flags: Record<string, string>, extra: { autoAck?: boolean } = {}): Promise<SwitchboardClient> {
  const kf = readKeyFile(need(flags, "--key", "the device key file written by `device enroll` or `device link`"));
  const client = new SwitchboardClient({ ...connectOptions(flags, kf), key: kf, userAgent: "switchboard-cli", ...extra });
  await client.connect();
  return client;
}

export async function runClientCommand(name: string, args: Args): Promise<number> {
  const f = args.flags;
  const rest = args.positionals.slice(name.split(" ").length);
  switch (name) {
    case "user add":
    case "user code": {
      const account = rest[0];
      if (!account) throw new Error(`usage: switchboard ${name} NAME`);
      const cfg = loadConfig({ flags: f });
      const store = new SqliteAccountStore(cfg.dataDir, cfg.queue.durability);
      try {
        const r = name === "user add" ? store.createAccount(account, cfg.auth.enrollCodeTtl) : store.newEnrollCode(account, cfg.auth.enrollCodeTtl);
        if (!r.ok) throw new Error(r.message);
        if (f["--json"] === "true") out({ account, code: r.value.code, expires_in_s: cfg.auth.enrollCodeTtl });
        else {
          console.log(`${name === "user add" ? "created account" : "new code for"} ${account}`);
          console.log(`enrollment code (one use, valid ${Math.round(cfg.auth.enrollCodeTtl / 3600)} h): ${r.value.code}`);
          console.log(`enroll its first device with:\n  switchboard device enroll --user ${account} --code ${r.value.code} --key ${account}.key`);
        }
      } finally {
        store.close();
      }
      return 0;
    }
    case "device enroll": {
      const account = need(f, "--user", "the account to enroll a device for");
      const code = need(f, "--code", "the one-time code printed by `switchboard user add`");
      const keyPath = f["--key"] ?? `${account}.key`;
      if (existsSync(keyPath)) throw new Error(`${keyPath} exists already; pass --key with a new file name`);
      const conn = connectOptions(f);
      const key = generateDeviceKey();
      const r = await enrollDevice({ ...conn, account, code, key, name: f["--name"] ?? "cli" });
      writeKeyFile(keyPath, keyToFile(key, r.account, r.device, serverOf(conn)));
      if (f["--json"] === "true") out({ account: r.account, device: r.device, key: keyPath });
      else console.log(`enrolled ${r.account} device ${r.device}; key written to ${keyPath}`);
      return 0;
    }
    case "device link": {
      if (f["--approve"] !== undefined) {
        const client = await openClient(f);
        try {
          const r = await client.request<{ d: number }>("link.approve", { code: f["--approve"] });
          if (f["--json"] === "true") out({ approved: true, device: r.d });
          else console.log(`approved: new device ${r.d}`);
        } finally {
          await client.close();
        }
        return 0;
      }
      const account = need(f, "--user", "the account to link this new device to (or --approve CODE on an existing device)");
      const keyPath = f["--key"] ?? `${account}-linked.key`;
      if (existsSync(keyPath)) throw new Error(`${keyPath} exists already; pass --key with a new file name`);
      const conn = connectOptions(f);
      const key = generateDeviceKey();
      const r = await linkDevice({
        ...conn, account, key, name: f["--name"] ?? "cli",
        onCode: (code, exp) => {
          if (f["--json"] === "true") out({ event: "linkcode", code, expires: exp });
          else console.log(`on a device of ${account}, run:\n  switchboard device link --approve ${code} --key <its key file>\n(waiting for approval until ${new Date(exp).toISOString()})`);
        },
      });
      writeKeyFile(keyPath, keyToFile(key, r.account, r.device, serverOf(conn)));
      if (f["--json"] === "true") out({ event: "linked", account: r.account, device: r.device, key: keyPath });
      else console.log(`linked ${r.account} device ${r.device}; key written to ${keyPath}`);
      return 0;
    }
    case "device list": {
      const client = await openClient(f);
      try {
        const r = await client.request<{ u: string; devices: { d: number; name?: string; created: number }[] }>("devices", f["--user"] ? { u: f["--user"] } : {});
        if (f["--json"] === "true") out(r);
        else for (const d of r.devices) console.log(`${r.u} device ${d.d}${d.name ? ` "${d.name}"` : ""} since ${new Date(d.created).toISOString()}${d.d === client.device && r.u === client.account ? " (this one)" : ""}`);
      } finally {
        await client.close();
      }
      return 0;
    }
    case "device revoke": {
      const d = Number(need(f, "--device", "the device id to revoke (see `device list`)"));
      const client = await openClient(f);
      try {
        await client.request("device.revoke", { d });
        console.log(`revoked device ${d}`);
      } finally {
        await client.close();
      }
      return 0;
    }
    case "send": {
      const to = need(f, "--to", "the recipient account");
      const client = await openClient(f);
      try {
        const texts = rest.length ? [rest.join(" ")] : await readLines();
        for (const text of texts) {
          const s = await client.send(to, text);
          out({ event: "sent", ...s });
        }
      } finally {
        await client.close();
      }
      return 0;
    }
    case "listen": {
      const client = new SwitchboardClient({ ...connectOptions(f, readKeyFile(need(f, "--key", "the device key file"))), key: readKeyFile(f["--key"]!) });
      const dec = new TextDecoder("utf-8", { fatal: false });
      client.on("message", (m) => out({ event: "message", conversation: m.conversation, from: m.from, device: m.fromDevice, to: m.to, id: m.id, seq: m.seq, ts: m.ts, sync: m.sync, text: dec.decode(m.payload) }));
      client.on("receipt", (r) => out({ event: "receipt", ...r }));
      client.on("typing", (t) => out({ event: "typing", ...t }));
      client.on("ready", (r) => out({ event: "ready", ...r }));
      client.on("close", (c) => out({ event: "close", ...c }));
      client.on("error", (e) => out({ event: "error", code: e.code, message: e.message }));
      await client.connect();
      await new Promise<void>((resolve) => {
        process.on("SIGINT", resolve);
        process.on("SIGTERM", resolve);
      });
      await client.close();
      return 0;
    }
    case "chat":
      return chat(f);
  }
  throw new Error(`unknown command ${name}`);
}

async function readLines(): Promise<string[]> {
  const rl = createInterface({ input: process.stdin });
  const lines: string[] = [];
  for await (const line of rl) if (line.trim()) lines.push(line);
  return lines;
}

/** An interactive conversation: typed lines are sent, incoming lines shown with ticks, everything shown is marked read. */
async function chat(f: Record<string, string>): Promise<number> {
  const to = need(f, "--to", "who to chat with");
  const client = await openClient(f);
  const dec = new TextDecoder();
  const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: `${client.account} > ` });
  const show = (line: string) => {
    process.stdout.write(`\r\x1b[K${line}\n`);
    rl.prompt(true);
  };
  client.on("message", (m) => {
    if (m.conversation !== to) return show(`[${m.conversation}] ${m.from}: ${dec.decode(m.payload)}`);
    show(`${m.sync ? `${m.from} (other device)` : m.from}: ${dec.decode(m.payload)}`);
    if (!m.sync) client.markRead(to, m.seq);
  });
  client.on("receipt", (r) => {
    if (r.with === to && r.account === to) show(`  ${r.kind === "read" ? "✓✓ read" : "✓✓ delivered"} up to #${r.seq}`);
  });
  client.on("typing", (t) => {
    if (t.account === to && t.state === "typing") show(`  ${to} is typing…`);
  });
  client.on("close", (c) => show(`  (connection closed: ${c.reason}${c.willReconnect ? ", reconnecting" : ""})`));
  client.on("ready", () => show("  (connected)"));
  show(`chatting with ${to}; type a line and press enter, ctrl-d to quit`);
  rl.prompt();
  for await (const line of rl) {
    const text = line.trim();
    if (!text) {
      rl.prompt();
      continue;
    }
    client.send(to, text).then(
      (s) => show(`  ✓ sent #${s.seq}`),
      (e: Error) => show(`  ✗ not sent: ${e.message}`),
    );
    rl.prompt();
  }
  await client.close();
  return 0;
}

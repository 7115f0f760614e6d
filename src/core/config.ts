/**
 * One table of settings. Each has a dotted key (`tcp.port`), which is also
 * its place in the TOML file (`[tcp] port = 5222`), its flag (`--tcp-port`)
 * and its environment variable (`SWITCHBOARD_TCP_PORT`). Precedence:
 * flag > environment > file > default. The README's configuration reference
 * is generated from this table by `switchboard config`.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";

type Kind = "string" | "int" | "bool" | "enum";
interface Setting {
  key: string;
  kind: Kind;
  def: string | number | boolean;
  doc: string;
  min?: number;
  max?: number;
  values?: readonly string[];
}

export const SETTINGS: readonly Setting[] = [
  { key: "data_dir", kind: "string", def: "./data", doc: "Where accounts, queues, the server id and the development TLS certificate live." },
  { key: "tcp.host", kind: "string", def: "127.0.0.1", doc: "Plain TCP listen address." },
  { key: "tcp.port", kind: "int", def: 5222, min: -1, max: 65535, doc: "Plain TCP port; 0 picks a free port, -1 disables the listener." },
  { key: "tls.host", kind: "string", def: "127.0.0.1", doc: "TLS listen address." },
  { key: "tls.port", kind: "int", def: 5223, min: -1, max: 65535, doc: "TLS port; 0 picks a free port, -1 disables the listener." },
  { key: "tls.cert", kind: "string", def: "", doc: "PEM certificate chain. Empty: a development certificate is generated under data_dir on first start." },
  { key: "tls.key", kind: "string", def: "", doc: "PEM private key for tls.cert." },
  { key: "http.host", kind: "string", def: "127.0.0.1", doc: "HTTP address for /healthz and /metrics." },
  { key: "http.port", kind: "int", def: 5280, min: -1, max: 65535, doc: "HTTP port; 0 picks a free port, -1 disables it." },
  { key: "limits.max_frame", kind: "int", def: 65536, min: 256, max: 16 * 1024 * 1024, doc: "Largest frame body accepted, in bytes (announced in the server hello)." },
  { key: "limits.max_devices", kind: "int", def: 8, min: 1, max: 64, doc: "Devices per account." },
  { key: "limits.outbound_bytes", kind: "int", def: 1024 * 1024, min: 65536, doc: "Unsent bytes a connection may hold before it is cut off as a slow consumer." },
  { key: "limits.window", kind: "int", def: 256, min: 1, max: 65536, doc: "Unacknowledged deliveries in flight per connection; more follow as acks arrive." },
  { key: "limits.error_budget", kind: "int", def: 100, min: 1, doc: "Invalid frames a connection may send before it is closed." },
  { key: "timeouts.ping_interval", kind: "int", def: 30, min: 1, doc: "Seconds between client pings, announced in the hello." },
  { key: "timeouts.idle", kind: "int", def: 90, min: 2, doc: "Seconds of silence after which a connection is reaped." },
  { key: "timeouts.auth", kind: "int", def: 10, min: 1, doc: "Seconds a connection may stay unauthenticated." },
  { key: "timeouts.sweep", kind: "int", def: 1, min: 1, max: 60, doc: "Seconds between sweeps for idle and unauthenticated connections." },
  { key: "timeouts.link", kind: "int", def: 300, min: 10, doc: "Seconds a device-link request waits for approval." },
  { key: "auth.enroll_code_ttl", kind: "int", def: 86400, min: 60, doc: "Seconds an enrollment code from `user add` stays valid." },
  { key: "auth.fail_per_ip", kind: "int", def: 30, min: 1, doc: "Failed logins per source address per minute before refusing that address." },
  { key: "auth.fail_per_account", kind: "int", def: 10, min: 1, doc: "Failed logins per account per minute before refusing that account." },
  { key: "queue.shards", kind: "int", def: 8, min: 1, max: 256, doc: "Offline-queue SQLite files (an account's queues live in the shard its name hashes to)." },
  { key: "queue.commit_ms", kind: "int", def: 5, min: 0, max: 1000, doc: "Group commit: longest wait before buffered queue writes are committed." },
  { key: "queue.commit_rows", kind: "int", def: 1000, min: 1, doc: "Group commit: rows that trigger a commit before commit_ms." },
  { key: "queue.durability", kind: "enum", def: "process", values: ["process", "power"], doc: "process: survives kill -9 (WAL, synchronous=NORMAL). power: survives power loss (synchronous=FULL), slower." },
  { key: "log.level", kind: "enum", def: "info", values: ["debug", "info", "warn", "error"], doc: "Log verbosity (logs are JSON lines on stderr)." },
];

export interface Config {
  dataDir: string;
  tcp: { host: string; port: number };
  tls: { host: string; port: number; cert: string; key: string };
  http: { host: string; port: number };
  limits: { maxFrame: number; maxDevices: number; outboundBytes: number; window: number; errorBudget: number };
  timeouts: { pingInterval: number; idle: number; auth: number; sweep: number; link: number };
  auth: { enrollCodeTtl: number; failPerIp: number; failPerAccount: number };
  queue: { shards: number; commitMs: number; commitRows: number; durability: "process" | "power" };
  log: { level: "debug" | "info" | "warn" | "error" };
}

const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
export const flagName = (key: string) => "--" + key.replace(/[._]/g, "-");
export const envName = (key: string) => "SWITCHBOARD_" + key.replace(/\./g, "_").toUpperCase();

function coerce(s: Setting, raw: unknown, source: string): string | number | boolean {
  const where = `${s.key} (from ${source})`;
  switch (s.kind) {
    case "string":
      if (typeof raw !== "string") throw new Error(`config: ${where} must be a string`);
      return raw;
    case "bool":
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      throw new Error(`config: ${where} must be true or false, got ${JSON.stringify(raw)}`);
    case "enum":
      if (typeof raw !== "string" || !s.values!.includes(raw)) throw new Error(`config: ${where} must be one of ${s.values!.join(", ")}, got ${JSON.stringify(raw)}`);
      return raw;
    case "int": {
      const n = typeof raw === "number" ? raw : typeof raw === "string" && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isInteger(n)) throw new Error(`config: ${where} must be an integer, got ${JSON.stringify(raw)}`);
      if (s.min !== undefined && n < s.min) throw new Error(`config: ${where} must be at least ${s.min}, got ${n}`);
      if (s.max !== undefined && n > s.max) throw new Error(`config: ${where} must be at most ${s.max}, got ${n}`);
      return n;
    }
  }
}

function lookup(obj: unknown, key: string): unknown {
  let cur = obj;
  for (const part of key.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/**
 * Builds the configuration. `flags` maps flag names (with the leading `--`)
 * to raw values; unknown flags are the caller's business. Throws a message
 * naming the setting and the source when a value is wrong.
 */
export function loadConfig(opts: { file?: string; env?: Record<string, string | undefined>; flags?: Record<string, string> } = {}): Config {
  const env = opts.env ?? process.env;
  const flags = opts.flags ?? {};
  const file = opts.file ?? flags["--config"] ?? env.SWITCHBOARD_CONFIG;
  let fromFile: unknown = {};
  if (file) {
    if (!existsSync(file)) throw new Error(`config: file ${file} does not exist`);
    try {
      fromFile = Bun.TOML.parse(readFileSync(file, "utf8"));
    } catch (e) {
      throw new Error(`config: ${file} is not valid TOML: ${(e as Error).message}`);
    }
    const known = new Set(SETTINGS.map((s) => s.key));
    const walk = (o: unknown, prefix: string) => {
      for (const [k, v] of Object.entries(o as Record<string, unknown>)) {
        const key = prefix ? `${prefix}.${k}` : k;
        if (v !== null && typeof v === "object" && !Array.isArray(v)) walk(v, key);
        else if (!known.has(key)) throw new Error(`config: ${file} sets unknown key ${key}`);
      }
    };
    walk(fromFile, "");
  }
  const flat: Record<string, string | number | boolean> = {};
  for (const s of SETTINGS) {
    let v: string | number | boolean = s.def;
    const f = lookup(fromFile, s.key);
    if (f !== undefined) v = coerce(s, f, file!);
    const e = env[envName(s.key)];
    if (e !== undefined && e !== "") v = coerce(s, e, envName(s.key));
    const fl = flags[flagName(s.key)];
    if (fl !== undefined) v = coerce(s, fl, flagName(s.key));
    flat[s.key] = v;
  }
  // Nest and camel-case: "limits.max_frame" -> cfg.limits.maxFrame.
  const cfg: Record<string, any> = {};
  for (const [key, v] of Object.entries(flat)) {
    const parts = key.split(".").map(camel);
    let cur = cfg;
    for (const p of parts.slice(0, -1)) cur = cur[p] ??= {};
    cur[parts[parts.length - 1]!] = v;
  }
  cfg.dataDir = resolve(cfg.dataDir);
  const c = cfg as Config;
  if (c.timeouts.idle <= c.timeouts.pingInterval) {
    throw new Error(`config: timeouts.idle (${c.timeouts.idle}) must exceed timeouts.ping_interval (${c.timeouts.pingInterval}), or every client is reaped between pings`);
  }
  return c;
}

/** Markdown table of every setting, for the README. */
export function settingsTable(): string {
  const rows = SETTINGS.map((s) => `| \`${s.key}\` | \`${flagName(s.key)}\` | \`${envName(s.key)}\` | \`${String(s.def)}\` | ${s.doc} |`);
  return ["| key (TOML) | flag | environment | default | meaning |", "|---|---|---|---|---|", ...rows].join("\n");
}

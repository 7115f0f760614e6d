#!/usr/bin/env bun
/**
 * switchboard-mon: threshold alarms from a running server's /metrics and
 * /readyz, meant to run every minute (cron or the switchboard-mon.timer unit),
 * in the spirit of WhatsApp's mon.sh: one line per problem, repeated on every
 * run until it is fixed, and one line when it clears.
 *
 *   bun tools/mon.ts [--url http://127.0.0.1:5280/metrics] [--state FILE]
 *                    [--CHECK-warn N] [--CHECK-crit N] [--timeout S] [--verbose]
 *
 * Output, one line each:
 *   ALARM <check> value=V threshold=T level=warning|critical   a breach, every run while it lasts
 *   CLEARED <check> value=V                                   once, on the first run after it ended
 *   UNKNOWN <check> ...                                       the server does not expose that metric
 *   OK <check> value=V                                        with --verbose only
 * Exit status: 0 all fine, 1 a warning, 2 a critical alarm, 3 the server
 * cannot be reached, 4 wrong arguments. An UNKNOWN does not change it.
 *
 * Self-contained (no import from src/): the deployed copy runs on the
 * compiled binary's own Bun, `BUN_BE_BUN=1 switchboard /usr/local/lib/switchboard/mon.ts`.
 * The state (which alarms are raised) is a small JSON file, so a CLEARED line
 * is printed once; give each monitored server its own --state file.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

type Level = "warning" | "critical";
type Unit = "count" | "seconds" | "bytes";

interface Check {
  /** Name in the output and in the flags (`--queue-depth-warn`). */
  name: string;
  metric: string;
  /** How the metric's samples (one per shard, per label set) become one value. */
  agg: "sum" | "max";
  unit: Unit;
  warn: number;
  crit: number;
  help: string;
}

const DAY = 86400;
const GIB = 1024 ** 3;

export const CHECKS: readonly Check[] = [
  { name: "queue_depth", metric: "switchboard_queue_depth", agg: "sum", unit: "count", warn: 1_000_000, crit: 10_000_000, help: "items queued for devices, summed over shards" },
  { name: "queue_oldest_age", metric: "switchboard_queue_oldest_age_seconds", agg: "max", unit: "seconds", warn: 7 * DAY, crit: 27 * DAY, help: "age of the oldest queued item, largest over shards (items expire after queue.retention, 30 days by default)" },
  { name: "event_loop_lag", metric: "switchboard_event_loop_lag_seconds", agg: "max", unit: "seconds", warn: 0.1, crit: 1, help: "how late the server's timers fire" },
  { name: "canary_age", metric: "switchboard_canary_age_seconds", agg: "max", unit: "seconds", warn: 20, crit: 60, help: "seconds since the last end-to-end canary round trip" },
  { name: "memory", metric: "switchboard_process_resident_bytes", agg: "max", unit: "bytes", warn: 4 * GIB, crit: 8 * GIB, help: "resident memory of the server process" },
];

/** The name used for /readyz in the output and the state. */
const READYZ = "readyz";
/** The name of the alarm raised when the server cannot be reached. */
const UNREACHABLE = "server_unreachable";

const flagOf = (c: Check, level: "warn" | "crit") => `--${c.name.replace(/_/g, "-")}-${level}`;

const USAGE = `usage: bun tools/mon.ts [--url URL] [--readyz-url URL] [--state FILE] [--timeout SECONDS] [--verbose]
                      [--CHECK-warn VALUE] [--CHECK-crit VALUE ...]

Reads a Switchboard server's /metrics and /readyz and prints one line per problem:
  ALARM <check> value=V threshold=T level=warning|critical   (every run while it lasts)
  CLEARED <check> value=V                                   (once, when it ends)
  UNKNOWN <check> ...                                       (the metric is not exposed)
Exit status: 0 fine, 1 warning, 2 critical, 3 server unreachable, 4 wrong arguments.

  --url URL            the metrics endpoint (default http://127.0.0.1:5280/metrics)
  --readyz-url URL     the readiness endpoint (default: /readyz next to --url)
  --state FILE         where raised alarms are remembered between runs
                       (default: a file per URL in the temp directory)
  --timeout SECONDS    for each HTTP request (default 5)
  --verbose            also print OK lines

checks (value > warn: warning; value > crit: critical; sizes take K/M/G/T, durations ms/s/m/h/d):
${CHECKS.map((c) => `  ${flagOf(c, "warn")} / ${flagOf(c, "crit")}`.padEnd(56) + `default ${fmt(c.warn, c.unit)} / ${fmt(c.crit, c.unit)}\n      ${c.metric}: ${c.help}`).join("\n")}
  readyz: 200 is fine; 503 (draining, canary failed or late) is critical`;

class UsageError extends Error {}

function fmt(v: number, unit: Unit): string {
  if (unit === "bytes" && v >= 1024 && v % 1024 === 0) {
    for (const [s, m] of [["T", 1024 ** 4], ["G", GIB], ["M", 1024 ** 2], ["K", 1024]] as const) if (v % m === 0) return `${v / m}${s}`;
  }
  if (unit === "seconds" && v >= 3600 && v % 3600 === 0) return v % DAY === 0 ? `${v / DAY}d` : `${v / 3600}h`;
  return String(v);
}

/** A threshold flag's value: a number, with a size suffix for bytes or a duration suffix for seconds. */
function parseThreshold(flag: string, raw: string, unit: Unit): number {
  const m = /^(\d+(?:\.\d+)?)([a-zA-Z]*)$/.exec(raw.trim());
  const mult: Record<Unit, Record<string, number>> = {
    count: { "": 1, k: 1e3, m: 1e6 },
    seconds: { "": 1, ms: 1e-3, s: 1, m: 60, h: 3600, d: DAY },
    bytes: { "": 1, k: 1024, m: 1024 ** 2, g: GIB, t: 1024 ** 4 },
  };
  const f = m ? mult[unit][m[2]!.toLowerCase()] : undefined;
  if (!m || f === undefined) {
    throw new UsageError(`${flag}: ${JSON.stringify(raw)} is not a ${unit === "bytes" ? "size (e.g. 4G)" : unit === "seconds" ? "duration (e.g. 30s, 5m)" : "number"}`);
  }
  return Number(m[1]) * f;
}

export interface Options {
  url: string;
  readyzUrl: string;
  state: string;
  timeoutMs: number;
  verbose: boolean;
  thresholds: Map<string, { warn: number; crit: number }>;
}

export function parseOptions(argv: string[]): Options {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--help" || a === "-h") throw new UsageError("");
    if (a === "--verbose" || a === "-v") {
      flags.set("--verbose", "true");
      continue;
    }
    if (!a.startsWith("--")) throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
    const eq = a.indexOf("=");
    const [k, v] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, argv[++i]];
    if (v === undefined) throw new UsageError(`${k} needs a value`);
    flags.set(k, v);
  }
  const known = new Set(["--url", "--readyz-url", "--state", "--timeout", "--verbose", ...CHECKS.flatMap((c) => [flagOf(c, "warn"), flagOf(c, "crit")])]);
  for (const k of flags.keys()) if (!known.has(k)) throw new UsageError(`unknown flag ${k}`);
  const url = flags.get("--url") ?? "http://127.0.0.1:5280/metrics";
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--url: ${JSON.stringify(url)} is not a URL`);
  }
  const timeout = Number(flags.get("--timeout") ?? "5");
  if (!(timeout > 0)) throw new UsageError(`--timeout must be a positive number of seconds`);
  const thresholds = new Map<string, { warn: number; crit: number }>();
  for (const c of CHECKS) {
    const w = flags.get(flagOf(c, "warn"));
    const cr = flags.get(flagOf(c, "crit"));
    const warn = w === undefined ? c.warn : parseThreshold(flagOf(c, "warn"), w, c.unit);
    const crit = cr === undefined ? c.crit : parseThreshold(flagOf(c, "crit"), cr, c.unit);
    // A warning above the critical level would never show: the critical one is met first.
    if (warn > crit) throw new UsageError(`${flagOf(c, "warn")} (${fmt(warn, c.unit)}) is above ${flagOf(c, "crit")} (${fmt(crit, c.unit)})`);
    thresholds.set(c.name, { warn, crit });
  }
  return {
    url,
    readyzUrl: flags.get("--readyz-url") ?? new URL("/readyz", parsed).href,
    state: flags.get("--state") ?? join(tmpdir(), `switchboard-mon-${parsed.host.replace(/[^A-Za-z0-9.-]/g, "_")}.json`),
    timeoutMs: timeout * 1000,
    verbose: flags.has("--verbose"),
    thresholds,
  };
}

/** Prometheus text format: metric name -> the values of its samples (every label set). */
export function parseMetrics(text: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0];
    if (!name) continue;
    let rest = line.slice(name.length);
    if (rest.startsWith("{")) {
      // Skip the label set, minding quoted values that may hold } or spaces.
      let i = 1;
      let quoted = false;
      for (; i < rest.length; i++) {
        const ch = rest[i];
        if (quoted && ch === "\\") i++;
        else if (ch === '"') quoted = !quoted;
        else if (ch === "}" && !quoted) break;
      }
      rest = rest.slice(i + 1);
    }
    const v = rest.trim().split(/\s+/)[0];
    if (v === undefined || v === "") continue;
    const n = v === "+Inf" ? Infinity : v === "-Inf" ? -Infinity : Number(v);
    if (Number.isNaN(n)) continue;
    const list = out.get(name) ?? [];
    list.push(n);
    out.set(name, list);
  }
  return out;
}

interface State {
  /** Raised alarms by check name. */
  alarms: Record<string, { level: Level; since: string }>;
}

function readState(path: string): State {
  if (!existsSync(path)) return { alarms: {} };
  try {
    const s = JSON.parse(readFileSync(path, "utf8"));
    if (s && typeof s.alarms === "object" && s.alarms !== null) return s as State;
  } catch {}
  // A damaged state file loses only the memory of which alarms to announce as cleared.
  process.stderr.write(`switchboard-mon: state file ${path} is unreadable; starting afresh\n`);
  return { alarms: {} };
}

function writeState(path: string, s: State): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(s) + "\n");
    renameSync(tmp, path); // atomic: a run killed halfway leaves the previous state
  } catch (e) {
    // The alarms were printed; without the state, the next run cannot say CLEARED.
    process.stderr.write(`switchboard-mon: cannot write the state file ${path}: ${(e as Error).message}; pass --state FILE\n`);
  }
}

const num = (v: number) => (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6))));

async function get(url: string, timeoutMs: number): Promise<{ status: number; text: string }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: "text/plain, application/json" } });
  return { status: r.status, text: await r.text() };
}

/** One run: fetch, compare, print, remember. Returns the exit status. */
export async function run(o: Options, print: (line: string) => void = console.log): Promise<number> {
  const state = readState(o.state);
  const now = new Date().toISOString();
  const raised = new Map<string, { level: Level; line: string }>();
  const ok = new Map<string, string>();
  let metrics: Map<string, number[]>;
  let ready: { status: number; text: string };
  try {
    const m = await get(o.url, o.timeoutMs);
    if (m.status !== 200) throw new Error(`HTTP ${m.status} from ${o.url}`);
    metrics = parseMetrics(m.text);
    ready = await get(o.readyzUrl, o.timeoutMs);
  } catch (e) {
    const err = (e as Error).message.replace(/\s+/g, " ");
    print(`ALARM ${UNREACHABLE} url=${o.url} error=${JSON.stringify(err)} level=critical`);
    // The other alarms stay as they were: nothing is known about them now.
    state.alarms[UNREACHABLE] ??= { level: "critical", since: now };
    writeState(o.state, state);
    return 3;
  }
  if (state.alarms[UNREACHABLE]) ok.set(UNREACHABLE, `url=${o.url}`);

  for (const c of CHECKS) {
    const samples = metrics.get(c.metric);
    if (!samples || samples.length === 0) {
      print(`UNKNOWN ${c.name} metric=${c.metric} not exposed by ${o.url}`);
      continue; // not evaluated: a raised alarm stays raised, none is cleared
    }
    const value = c.agg === "sum" ? samples.reduce((a, b) => a + b, 0) : Math.max(...samples);
    const t = o.thresholds.get(c.name)!;
    const level: Level | null = value > t.crit ? "critical" : value > t.warn ? "warning" : null;
    if (level) raised.set(c.name, { level, line: `ALARM ${c.name} value=${num(value)} threshold=${num(level === "critical" ? t.crit : t.warn)} level=${level}` });
    else ok.set(c.name, `value=${num(value)}`);
  }

  if (ready.status === 200) ok.set(READYZ, "value=200");
  else if (ready.status === 404) print(`UNKNOWN ${READYZ} ${o.readyzUrl} answered 404: this server has no readiness endpoint`);
  else {
    let reason = "";
    try {
      const body = JSON.parse(ready.text);
      if (typeof body.reason === "string") reason = ` reason=${body.reason}`;
    } catch {}
    raised.set(READYZ, { level: "critical", line: `ALARM ${READYZ} value=${ready.status} threshold=200${reason} level=critical` });
  }

  for (const [name, a] of raised) {
    print(a.line);
    const prev = state.alarms[name];
    state.alarms[name] = { level: a.level, since: prev && prev.level === a.level ? prev.since : now };
  }
  for (const [name, detail] of ok) {
    if (state.alarms[name]) {
      print(`CLEARED ${name} ${detail}`);
      delete state.alarms[name];
    } else if (o.verbose) print(`OK ${name} ${detail}`);
  }
  writeState(o.state, state);
  const levels = [...raised.values()].map((a) => a.level);
  return levels.includes("critical") ? 2 : levels.includes("warning") ? 1 : 0;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await run(parseOptions(process.argv.slice(2)));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message) console.error(`switchboard-mon: ${e.message}\n${USAGE.split("\n\n")[0]}\n(--help for the checks and their flags)`);
    else console.log(USAGE);
    code = e.message ? 4 : 0;
  }
  process.exit(code);
}

/**
 * Runs the benchmark matrix of BENCHMARKS.md: every configuration `--runs`
 * times (interleaved, so that drifting background load spreads over all of
 * them), appends each result line to a JSONL file, and prints Markdown tables
 * with the median and the range of the runs.
 *
 *   bun loadtest/matrix.ts [--runs 3] [--out bench.jsonl] [--only SETS] [--open-rate R] [--extra "FLAGS"]
 *   bun loadtest/matrix.ts --summarize bench.jsonl [--max-other 20]
 *
 * SETS is a comma-separated list of idle, pairs, open, login, reconnect,
 * http, groups (default: all of them).
 *
 * --max-other P drops runs during which other processes on the (shared)
 * machine used more than P % of a core (the run's `other_cpu_pct`).
 *
 * Without --open-rate the open-loop row runs at half of the closed-loop
 * peak: the highest median delivered rate of the closed-loop pairs rows.
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "../src/cli/args.ts";

const ROOT = resolve(import.meta.dir, "..");
// --extra is a list of the load generator's flags, so it may start with "--".
const { flags } = parseArgs(process.argv.slice(2), { booleans: new Set(), verbatim: new Set(["--extra"]) });
const flag = (name: string, def?: string) => flags[name] ?? def;
const runs = Number(flag("--runs", "3"));
const out = resolve(flag("--out", `bench-${new Date().toISOString().slice(0, 10)}.jsonl`)!);
const only = new Set((flag("--only") ?? "idle,pairs,open,login,reconnect,http,groups").split(","));
/** Flags added to every run, e.g. "--server-main /tmp/sb-5c3c98e/src/cli/main.ts" to measure a clean export of one commit. */
const extra = (flag("--extra") ?? "").split(/\s+/).filter(Boolean);

interface Config {
  key: string;
  args: string[];
}

const IDLE: Config[] = [
  ...[5000, 10000, 15000].map((n) => ({ key: `idle tcp ${n}`, args: ["idle", "--spawn", "--conns", String(n)] })),
  ...[10000].map((n) => ({ key: `idle tls ${n}`, args: ["idle", "--spawn", "--transport", "tls", "--conns", String(n)] })),
];
const PAIRS: Config[] = [2, 10, 50].map((p) => ({
  key: `pairs ${p} closed w16`,
  args: ["pairs", "--spawn", "--pairs", String(p), "--window", "16", "--warmup", "3", "--duration", "10"],
}));
const LOGIN: Config[] = [5000, 10000, 15000].map((n) => ({ key: `login-storm tcp ${n}`, args: ["login-storm", "--spawn", "--conns", String(n)] }));
const RECONNECT: Config[] = [
  { key: "reconnect-storm 5000 kernel sdk", args: ["reconnect-storm", "--spawn", "--conns", "5000", "--offline", "3"] },
  { key: "reconnect-storm 5000 kernel none", args: ["reconnect-storm", "--spawn", "--conns", "5000", "--offline", "3", "--backoff", "none"] },
];
const HTTP: Config[] = [{ key: "http c10", args: ["http", "--spawn", "--duration", "10", "--connections", "10"] }];
const GROUPS: Config[] = [
  { key: "groups 10x10", args: ["groups", "--spawn", "--groups", "10", "--members", "10", "--senders", "2", "--window", "16"] },
  { key: "groups 2x100", args: ["groups", "--spawn", "--groups", "2", "--members", "100", "--senders", "2", "--window", "16"] },
];

function run(c: Config): Record<string, any> | null {
  const t0 = Date.now();
  const p = Bun.spawnSync([process.execPath, join(ROOT, "loadtest/main.ts"), ...c.args, ...extra], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const lines = p.stdout.toString().trim().split("\n");
  const last = lines[lines.length - 1] ?? "";
  let r: Record<string, any> | null = null;
  try {
    r = JSON.parse(last);
  } catch {
    console.error(`${c.key}: no result line (exit ${p.exitCode})\n${p.stderr.toString().slice(-2000)}`);
    return null;
  }
  r!.matrix_key = c.key;
  r!.matrix_args = c.args;
  r!.exit_code = p.exitCode;
  r!.date = new Date().toISOString();
  appendFileSync(out, JSON.stringify(r) + "\n");
  console.error(`${c.key}: exit ${p.exitCode} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return r;
}

const maxOther = flag("--max-other") !== undefined ? Number(flag("--max-other")) : Infinity;
function load(file: string): Record<string, any>[] {
  return readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => !(typeof r.other_cpu_pct === "number" && r.other_cpu_pct > maxOther));
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
function cell(xs: (number | null | undefined)[], digits = 0): string {
  const v = xs.filter((x): x is number => typeof x === "number");
  if (!v.length) return "–";
  const f = (x: number) => x.toFixed(digits);
  return v.length === 1 ? f(v[0]!) : `${f(median(v))} (${f(Math.min(...v))}–${f(Math.max(...v))})`;
}

function summarize(rows: Record<string, any>[]): string {
  const groups = new Map<string, Record<string, any>[]>();
  for (const r of rows) {
    const k = r.matrix_key ?? `${r.scenario} ${JSON.stringify(r.params)}`;
    (groups.get(k) ?? groups.set(k, []).get(k)!).push(r);
  }
  const idle = [...groups]
    .filter(([, rs]) => rs[0]!.scenario === "idle")
    .sort(([, a], [, b]) => a[0]!.params.transport.localeCompare(b[0]!.params.transport) || a[0]!.params.conns - b[0]!.params.conns);
  const pairs = [...groups]
    .filter(([, rs]) => rs[0]!.scenario === "pairs")
    .sort(([, a], [, b]) => a[0]!.params.mode.localeCompare(b[0]!.params.mode) || a[0]!.params.pairs - b[0]!.params.pairs);
  let md = "";
  if (idle.length) {
    md += "| transport | conns | runs | server bytes/conn | logins/s | all online after (s) | server µs CPU/login | login p99 (ms) | failed | other CPU % |\n";
    md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const [, rs] of idle) {
      const p = rs[0]!.params;
      md += `| ${p.transport} | ${p.conns} | ${rs.length} | ${cell(rs.map((r) => r.server.bytes_per_conn))} | ${cell(rs.map((r) => r.logins.per_s))} | ${cell(rs.map((r) => r.logins.seconds), 2)} | ${cell(rs.map((r) => r.server.cpu_us_per_login))} | ${cell(rs.map((r) => r.latency_ms.p99), 1)} | ${rs.reduce((a, r) => a + r.logins.failed, 0)} | ${cell(rs.map((r) => r.other_cpu_pct))} |\n`;
    }
  }
  if (pairs.length) {
    if (md) md += "\n";
    md += "| pairs | load | runs | delivered/s | msgs per server CPU-s | server CPU % | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | lost / dup / ooo | other CPU % |\n";
    md += "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n";
    for (const [, rs] of pairs) {
      const p = rs[0]!.params;
      const load = p.mode === "open" ? `open ${p.rate}/s` : `closed, window ${p.window}`;
      const bad = `${rs.reduce((a, r) => a + r.lost, 0)} / ${rs.reduce((a, r) => a + r.duplicates, 0)} / ${rs.reduce((a, r) => a + r.out_of_order, 0)}`;
      md += `| ${p.pairs} | ${load} | ${rs.length} | ${cell(rs.map((r) => r.delivered_per_s))} | ${cell(rs.map((r) => r.msgs_per_server_cpu_s))} | ${cell(rs.map((r) => r.server.cpu_pct))} | ${cell(rs.map((r) => r.latency_ms.p50), 2)} | ${cell(rs.map((r) => r.latency_ms.p99), 1)} | ${cell(rs.map((r) => r.latency_ms.p999), 1)} | ${cell(rs.map((r) => r.latency_ms.max), 1)} | ${bad} | ${cell(rs.map((r) => r.other_cpu_pct))} |\n`;
    }
  }
  const by = (sc: string) => [...groups].filter(([, rs]) => rs[0]!.scenario === sc);
  const login = by("login-storm").sort(([, a], [, b]) => a[0]!.params.conns - b[0]!.params.conns);
  if (login.length) {
    md += "\n| login-storm | runs | all online after (s) | logins/s | steady logins/s (p10–p90) | server µs CPU/login | logins per server CPU-s | p50 / p99 (ms) | failed attempts | bytes/conn | other CPU % |\n";
    md += "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
    for (const [k, rs] of login) {
      md += `| ${k} | ${rs.length} | ${cell(rs.map((r) => r.logins.seconds), 2)} | ${cell(rs.map((r) => r.logins.per_s))} | ${cell(rs.map((r) => r.logins.steady_per_s))} | ${cell(rs.map((r) => r.server.cpu_us_per_login))} | ${cell(rs.map((r) => r.server.logins_per_cpu_s))} | ${cell(rs.map((r) => r.latency_ms.p50))} / ${cell(rs.map((r) => r.latency_ms.p99))} | ${rs.reduce((a, r) => a + r.logins.failed_attempts, 0)} | ${cell(rs.map((r) => r.server.bytes_per_conn))} | ${cell(rs.map((r) => r.other_cpu_pct))} |\n`;
    }
  }
  const rec = by("reconnect-storm");
  if (rec.length) {
    md += "\n| reconnect-storm | runs | all back after outage (s) | all queued delivered (s) | reconnect p50 / p99 (ms) | server CPU (s) | µs CPU per reconnect | failed attempts | sent / delivered / redelivered | lost / dup / ooo / not redelivered | other CPU % |\n";
    md += "|---|---:|---:|---:|---|---:|---:|---:|---|---|---:|\n";
    for (const [k, rs] of rec) {
      const sum = (f: (r: any) => number) => rs.reduce((a, r) => a + f(r), 0);
      md += `| ${k} | ${rs.length} | ${cell(rs.map((r) => r.all_back_s), 2)} | ${cell(rs.map((r) => r.all_queued_delivered_s), 2)} | ${cell(rs.map((r) => r.latency_ms.p50))} / ${cell(rs.map((r) => r.latency_ms.p99))} | ${cell(rs.map((r) => r.server.cpu_s), 2)} | ${cell(rs.map((r) => r.server.cpu_us_per_reconnect))} | ${sum((r) => r.failed_attempts)} | ${cell(rs.map((r) => r.sent))} / ${cell(rs.map((r) => r.delivered))} / ${cell(rs.map((r) => r.redelivered))} | ${sum((r) => r.lost)} / ${sum((r) => r.duplicates)} / ${sum((r) => r.out_of_order)} / ${sum((r) => r.not_redelivered)} | ${cell(rs.map((r) => r.other_cpu_pct))} |\n`;
    }
  }
  const http = by("http");
  if (http.length) {
    md += "\n| http | path | runs | requests/s | p50 / p99 / p99.9 (ms) | server µs CPU/request | server CPU % | load generator CPU % | errors + non-2xx |\n";
    md += "|---|---|---:|---:|---|---:|---:|---:|---:|\n";
    for (const [k, rs] of http) {
      for (const path of Object.keys(rs[0]!.paths)) {
        const ps = rs.map((r) => r.paths[path]).filter((x) => x?.served);
        if (!ps.length) {
          md += `| ${k} | ${path} | ${rs.length} | not served (404) | | | | | |\n`;
          continue;
        }
        md += `| ${k} | ${path} | ${ps.length} | ${cell(ps.map((x) => x.requests_per_s))} | ${cell(ps.map((x) => x.latency_ms.p50), 2)} / ${cell(ps.map((x) => x.latency_ms.p99), 2)} / ${cell(ps.map((x) => x.latency_ms.p999), 1)} | ${cell(ps.map((x) => x.server.us_per_request), 1)} | ${cell(ps.map((x) => x.server.cpu_pct))} | ${cell(ps.map((x) => x.client?.cpu_pct))} | ${ps.reduce((a, x) => a + x.errors + x.timeouts + x.non_2xx, 0)} |\n`;
      }
    }
  }
  const grp = by("groups");
  if (grp.length) {
    md += "\n| groups | runs | gmsg in/s | deliveries out/s | deliveries per server CPU-s | server CPU % | delivery p50 / p99 (ms) | chain p99 (ms) | lost / dup / ooo | other CPU % |\n";
    md += "|---|---:|---:|---:|---:|---:|---|---:|---|---:|\n";
    for (const [k, rs] of grp) {
      md += `| ${k} | ${rs.length} | ${cell(rs.map((r) => r.sent_per_s))} | ${cell(rs.map((r) => r.delivered_per_s))} | ${cell(rs.map((r) => r.msgs_per_server_cpu_s))} | ${cell(rs.map((r) => r.server.cpu_pct))} | ${cell(rs.map((r) => r.latency_ms.p50), 2)} / ${cell(rs.map((r) => r.latency_ms.p99), 1)} | ${cell(rs.map((r) => r.chain_latency_ms.p99), 1)} | ${rs.reduce((a, r) => a + r.lost, 0)} / ${rs.reduce((a, r) => a + r.duplicates, 0)} / ${rs.reduce((a, r) => a + r.out_of_order, 0)} | ${cell(rs.map((r) => r.other_cpu_pct))} |\n`;
    }
  }
  return md;
}

const summarizeFile = flag("--summarize");
if (summarizeFile) {
  console.log(summarize(load(summarizeFile)));
  process.exit(0);
}

const SETS: Record<string, Config[]> = { idle: IDLE, pairs: PAIRS, login: LOGIN, reconnect: RECONNECT, http: HTTP, groups: GROUPS };
const configs = Object.entries(SETS).flatMap(([k, cs]) => (only.has(k) ? cs : []));
for (let r = 0; r < runs; r++) for (const c of configs) run(c);
if (only.has("open")) {
  let rate = Number(flag("--open-rate", "0"));
  let pairsN = 10;
  if (!rate && existsSync(out)) {
    // Half of the closed-loop peak: the best median delivered rate of the closed-loop rows, with that row's pair count.
    const rows = load(out).filter((r) => r.scenario === "pairs" && r.params.mode === "closed");
    const byKey = new Map<string, number[]>();
    for (const r of rows) (byKey.get(r.matrix_key) ?? byKey.set(r.matrix_key, []).get(r.matrix_key)!).push(r.delivered_per_s);
    let best = 0;
    for (const [k, xs] of byKey) {
      const m = median(xs);
      if (m > best) {
        best = m;
        pairsN = Number(k.split(" ")[1]);
      }
    }
    if (best) rate = Math.round(best / 2 / 100) * 100;
  }
  if (!rate) {
    console.error("no --open-rate and no closed-loop pairs result to take half of");
    process.exit(2);
  }
  const c: Config = { key: `pairs ${pairsN} open ${rate}`, args: ["pairs", "--spawn", "--pairs", String(pairsN), "--rate", String(rate), "--warmup", "3", "--duration", "10"] };
  for (let r = 0; r < runs; r++) run(c);
}
console.log(summarize(load(out)));

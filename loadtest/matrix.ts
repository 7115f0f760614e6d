/**
 * Runs the benchmark matrix of BENCHMARKS.md: every configuration `--runs`
 * times (interleaved, so that drifting background load spreads over all of
 * them), appends each result line to a JSONL file, and prints Markdown tables
 * with the median and the range of the runs.
 *
 *   bun loadtest/matrix.ts [--runs 3] [--out bench.jsonl] [--only idle|pairs|open] [--open-rate R] [--extra "FLAGS"]
 *   bun loadtest/matrix.ts --summarize bench.jsonl [--max-other 20]
 *
 * --max-other P drops runs during which other processes on the (shared)
 * machine used more than P % of a core (the run's `other_cpu_pct`).
 *
 * Without --open-rate the open-loop row runs at half the median delivered
 * rate of the 100-pair closed-loop row.
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const args = process.argv.slice(2);
const flag = (name: string, def?: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const runs = Number(flag("--runs", "3"));
const out = resolve(flag("--out", `bench-${new Date().toISOString().slice(0, 10)}.jsonl`)!);
const only = flag("--only");
/** Flags added to every run, e.g. "--server-main /tmp/sb-5c3c98e/src/cli/main.ts" to measure a clean export of one commit. */
const extra = (flag("--extra") ?? "").split(/\s+/).filter(Boolean);

interface Config {
  key: string;
  args: string[];
}

const IDLE: Config[] = [
  ...[1000, 5000, 15000].map((n) => ({ key: `idle tcp ${n}`, args: ["idle", "--spawn", "--conns", String(n)] })),
  ...[1000, 5000, 15000].map((n) => ({ key: `idle tls ${n}`, args: ["idle", "--spawn", "--transport", "tls", "--conns", String(n)] })),
];
const PAIRS: Config[] = [10, 100, 1000].map((p) => ({
  key: `pairs ${p} closed w16`,
  args: ["pairs", "--spawn", "--pairs", String(p), "--window", "16", "--warmup", "3", "--duration", "10"],
}));

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
  return md;
}

const summarizeFile = flag("--summarize");
if (summarizeFile) {
  console.log(summarize(load(summarizeFile)));
  process.exit(0);
}

const configs = only === "idle" ? IDLE : only === "pairs" ? PAIRS : only === "open" ? [] : [...IDLE, ...PAIRS];
for (let r = 0; r < runs; r++) for (const c of configs) run(c);
if (!only || only === "open") {
  let rate = Number(flag("--open-rate", "0"));
  if (!rate && existsSync(out)) {
    const peak = load(out).filter((r) => r.matrix_key === "pairs 100 closed w16").map((r) => r.delivered_per_s);
    if (peak.length) rate = Math.round(median(peak) / 2 / 100) * 100;
  }
  if (!rate) {
    console.error("no --open-rate and no 100-pair closed-loop result to take half of");
    process.exit(2);
  }
  const c: Config = { key: `pairs 100 open ${rate}`, args: ["pairs", "--spawn", "--pairs", "100", "--rate", String(rate), "--warmup", "3", "--duration", "10"] };
  for (let r = 0; r < runs; r++) run(c);
}
console.log(summarize(load(out)));

/** `http`: autocannon against the HTTP endpoints (/healthz, /metrics, /readyz when served): requests/s, latency percentiles, errors. */
import { latencyJson } from "../accounting.ts";
import { cpuSeconds, pin, rssKb } from "../proc.ts";
import { FatalError, UsageError, pct, round, say, sleep, type Outcome, type Run } from "../run.ts";
import { cpuDelta, otherCpuPct, serverSample } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag, type Identity } from "../setup.ts";
import { fmtLatency, newHistogram, summary } from "../stats.ts";
import { parseTarget, setup, type Target } from "../target.ts";
import { initAll, loginAll, requireLogins, split, startWorkers, workerCount } from "../workers.ts";

async function http(run: Run): Promise<Outcome> {
  const paths = (run.flag("--paths") ?? "/healthz,/metrics,/readyz").split(",").map((x) => x.trim()).filter(Boolean);
  const connections = run.num("--connections", 10, 1);
  const pipelining = run.num("--pipelining", 1, 1);
  const duration = run.num("--duration", 10, 1);
  const idleConns = run.num("--idle-conns", 0);
  const { default: autocannon } = await import("autocannon");
  let host: string;
  let port: number;
  let pid: number | null;
  let idle: { target: Target; ids: Identity[] } | null = null;
  if (run.spawnMode) {
    const tag = runTag();
    idle = await setup(run, Array.from({ length: idleConns }, (_, i) => `lt${tag}-${i}`));
    host = "127.0.0.1";
    port = idle.target.http!;
    pid = idle.target.pid;
  } else {
    if (idleConns > 0) throw new UsageError("http --idle-conns needs --spawn (with --target, run an idle load next to it)");
    ({ host, port, pid } = parseTarget(run, "HOST:PORT (for http: the server's HTTP port)"));
  }
  if (run.spawnMode) pin(process.pid, run.workerCpus);
  say(`http: ${paths.join(", ")} on ${host}:${port}, ${connections} connections, pipelining ${pipelining}, ${duration} s each${idleConns ? `, with ${idleConns} idle devices logged in` : ""}`);
  if (idle && idleConns > 0) {
    // Idle devices logged in for the whole run: /metrics walks every connection for its gauges.
    const nw = workerCount(run, idleConns);
    const ws = await startWorkers(run, nw);
    await initAll(ws, idle.target, split(idle.ids, nw, 1));
    const l = await loginAll(ws, idleConns, Math.max(20, Math.floor(400 / nw)), 30);
    say(`${l.online}/${idleConns} idle devices logged in in ${l.seconds.toFixed(2)} s`);
    requireLogins(l, "idle logins");
  }
  const results: Record<string, any> = {};
  const all = newHistogram();
  let sent = 0, ok = 0, errors = 0, timeouts = 0, non2xx = 0, cpuTotal = 0, secTotal = 0;
  let code = 0;
  for (const path of paths) {
    const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}${path}`;
    let probe: Response;
    try {
      probe = await fetch(url);
      await probe.arrayBuffer();
    } catch (e) {
      throw new FatalError(`GET ${url} failed: ${(e as Error).message}`);
    }
    if (probe.status === 404) {
      say(`${path}: 404 — not served by this server; skipped`);
      results[path] = { served: false };
      continue;
    }
    // 503 means "not ready yet" (/readyz until the server's first end-to-end check has passed): wait for it,
    // up to 30 s, so the run measures the endpoint rather than the server's start-up.
    let readyAfterMs: number | null = null;
    if (probe.status === 503) {
      const t0 = performance.now();
      while (probe.status === 503 && performance.now() - t0 < 30_000) {
        await sleep(200);
        probe = await fetch(url);
        await probe.arrayBuffer();
      }
      readyAfterMs = Math.round(performance.now() - t0);
      say(`${path}: answered 503 at first, ${probe.status} after ${readyAfterMs} ms`);
    }
    const h = newHistogram();
    const s0 = serverSample(run, pid);
    const own0 = cpuSeconds(process.pid) ?? 0;
    const inst = autocannon({ url, connections, pipelining, duration });
    inst.on("response", (_c: unknown, _status: number, _bytes: number, ms: number) => {
      h.recordValue(Math.max(1, Math.round(ms * 1000)));
    });
    const r: any = await inst;
    const s1 = serverSample(run, pid);
    const own = (cpuSeconds(process.pid) ?? 0) - own0;
    const wallS = (s1.t - s0.t) / 1000;
    const cpu = cpuDelta(s0, s1);
    const lat = summary(h);
    all.add(h);
    h.destroy();
    const total = r.requests.total as number;
    const res = {
      served: true, status: probe.status, ready_after_ms: readyAfterMs, requests: total, responses_2xx: r["2xx"], non_2xx: r.non2xx, errors: r.errors, timeouts: r.timeouts, resets: r.resets,
      requests_per_s: Math.round(total / wallS), bytes_per_s: Math.round(r.throughput.average),
      latency_ms: latencyJson(lat),
      server: { cpu_s: cpu === null ? null : round(cpu, 2), cpu_pct: cpu === null ? null : pct(cpu, wallS), us_per_request: cpu === null ? null : round((cpu * 1e6) / Math.max(1, total), 1), rss_kb: s1.rss },
      // autocannon runs in this process: when it is near 100 % of its core, the generator is the limit, not the server.
      client: { cpu_s: round(own, 2), cpu_pct: pct(own, wallS) },
      other_cpu_pct: otherCpuPct(s0, s1),
    };
    results[path] = res;
    sent += total;
    ok += r["2xx"];
    errors += r.errors;
    timeouts += r.timeouts;
    non2xx += r.non2xx;
    if (cpu !== null) cpuTotal += cpu;
    secTotal += wallS;
    say(`${path} (${probe.status}): ${res.requests_per_s} requests/s, ${total} requests, non-2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}`);
    say(`  latency: ${fmtLatency(lat)}`);
    if (cpu !== null) say(`  server CPU ${cpu.toFixed(2)} s (${res.server.cpu_pct}%): ${res.server.us_per_request} µs per request; RSS ${s1.rss} KiB; load generator ${res.client.cpu_pct}%; other processes ${res.other_cpu_pct}%`);
    if (r.errors || r.timeouts || r.non2xx) code = 4;
  }
  const lat = summary(all);
  const served = Object.values(results).some((x) => x.served);
  if (!served) code = 4;
  if (code) console.error(`\nloadtest: WARNING: ${errors} errors, ${timeouts} timeouts, ${non2xx} non-2xx answers${served ? "" : ", no path was served"}\n`);
  return {
    result: {
      scenario: "http",
      params: { paths, connections, pipelining, duration_s: duration, idle_conns: idleConns, mode_server: run.serverMode, server_bin: run.flag("--server-bin") ?? null },
      // Requests are the "messages" here: sent = requests made, delivered = 2xx answers, lost = requests without an answer.
      sent, delivered: ok, lost: errors + timeouts, duplicates: 0, out_of_order: 0, non_2xx: non2xx,
      sent_per_s: secTotal ? Math.round(sent / secTotal) : 0,
      delivered_per_s: secTotal ? Math.round(ok / secTotal) : 0,
      latency_of: "request -> response (autocannon, all paths)",
      latency_ms: latencyJson(lat),
      paths: results,
      server: { pid, cpu_s: round(cpuTotal, 2), cpu_pct: secTotal ? pct(cpuTotal, secTotal) : null, rss_kb: pid === null ? null : rssKb(pid), bytes_per_conn: null },
      // The noisiest path decides (the matrix drops runs above its --max-other).
      other_cpu_pct: Math.max(0, ...Object.values(results).filter((x) => x.served).map((x) => x.other_cpu_pct as number)),
      msgs_per_server_cpu_s: cpuTotal ? Math.round(sent / cpuTotal) : null,
    },
    code,
  };
}

export const HTTP: Scenario = {
  name: "http",
  summary: "autocannon against the HTTP endpoints (/healthz, /metrics, /readyz when served):\nrequests/s, latency percentiles, errors",
  server: true,
  flags: [
    ["--paths LIST", "comma-separated (default /healthz,/metrics,/readyz; a path the server answers with\n404 is skipped and reported as not served)"],
    ["--connections N", "autocannon connections (default 10)"],
    ["--pipelining N", "requests in flight per connection (default 1)"],
    ["--duration S", "seconds per path (default 10)"],
    ["--idle-conns N", "with --spawn: N idle logged-in devices during the run (the /metrics cost grows with them)"],
  ],
  run: http,
};

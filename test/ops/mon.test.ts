/**
 * tools/mon.ts, run as a process the way cron or the timer runs it:
 * against a real server (queue backlog from real offline messages, memory,
 * readiness, the server going away and coming back), and against a small
 * HTTP endpoint serving metric text the test writes, for the exact
 * transitions (breach, repeat, escalate, clear once, unknown, readyz).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Server } from "bun";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/binary.ts";

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

const MON = join(ROOT, "tools/mon.ts");
let dir: string;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "sb-mon-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  lines: string[];
  stderr: string;
}

async function mon(args: string[]): Promise<Run> {
  const p = Bun.spawn([process.execPath, MON, ...args], { cwd: dir, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
  const [out, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, lines: out.split("\n").filter(Boolean), stderr };
}

const freshState = () => join(dir, `state-${++n}.json`);

describe("against a real server", () => {
  let srv: TestServer;
  let state: string;
  const url = () => `http://127.0.0.1:${srv.http}/metrics`;

  beforeAll(async () => {
    srv = await startServer({ args: ["--canary-interval", "1"] });
    state = freshState();
    // Ready once the canary made its first round trip (a bound on waiting, not a timing check).
    await waitFor(async () => (await srv.http_get("/readyz")).status === 200, "/readyz 200");
  });
  afterAll(() => srv.cleanup());

  test("a healthy server: exit 0, nothing printed (every metric it reads is exposed); --verbose shows each check", async () => {
    const r = await mon(["--url", url(), "--state", state]);
    expect(r.stderr).toBe("");
    expect(r.lines).toEqual([]);
    expect(r.code).toBe(0);
    const v = await mon(["--url", url(), "--state", state, "--verbose"]);
    expect(v.lines.map((l) => l.split(" ").slice(0, 2).join(" "))).toEqual([
      "OK queue_depth",
      "OK queue_oldest_age",
      "OK event_loop_lag",
      "OK canary_age",
      "OK memory",
      "OK readyz",
    ]);
  });

  test("memory above the warning level: exit 1; above the critical level: exit 2; back under: CLEARED once", async () => {
    const w = await mon(["--url", url(), "--state", state, "--memory-warn", "1K"]);
    expect(w.code).toBe(1);
    expect(w.lines.length).toBe(1);
    const m = /^ALARM memory value=(\d+) threshold=1024 level=warning$/.exec(w.lines[0]!);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(1024 * 1024); // the server's real resident size
    const c = await mon(["--url", url(), "--state", state, "--memory-warn", "1K", "--memory-crit", "2K"]);
    expect(c.code).toBe(2);
    expect(c.lines[0]).toMatch(/^ALARM memory value=\d+ threshold=2048 level=critical$/);
    const cleared = await mon(["--url", url(), "--state", state]);
    expect(cleared.code).toBe(0);
    expect(cleared.lines.length).toBe(1);
    expect(cleared.lines[0]).toMatch(/^CLEARED memory value=\d+$/);
    expect((await mon(["--url", url(), "--state", state])).lines).toEqual([]);
  });

  test("messages waiting for an offline device count in the queue backlog", async () => {
    const alice = await srv.newDevice("alice");
    await srv.newDevice("bob"); // enrolled, then offline
    const a = await srv.client(alice);
    try {
      for (let i = 0; i < 3; i++) await a.send("bob", `waiting ${i}`);
    } finally {
      await a.close();
    }
    // The server reads queue stats at most every 100 ms: wait until its scrape shows them (a bound on waiting).
    const depth = async () => (await srv.http_get("/metrics")).text.split("\n").filter((l) => l.startsWith("switchboard_queue_depth{")).reduce((s, l) => s + Number(l.split(" ").pop()), 0);
    await waitFor(async () => (await depth()) >= 3, "queue depth 3 in /metrics");
    const r = await mon(["--url", url(), "--state", state, "--queue-depth-warn", "2", "--queue-depth-crit", "1000"]);
    expect(r.lines.filter((l) => !l.startsWith("ALARM queue_depth"))).toEqual([]);
    expect(r.code).toBe(1);
    const m = /^ALARM queue_depth value=(\d+) threshold=2 level=warning$/.exec(r.lines.join("\n"));
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(3);
  });

  test("the server gone: exit 3 and an unreachable alarm; back (new ports, same state): CLEARED", async () => {
    await srv.stop();
    const down = await mon(["--url", url(), "--state", state]);
    expect(down.code).toBe(3);
    expect(down.lines.length).toBe(1);
    expect(down.lines[0]).toStartWith(`ALARM server_unreachable url=${url()} error=`);
    await srv.restart(["--canary-interval", "1"]);
    await waitFor(async () => (await srv.http_get("/readyz")).status === 200, "/readyz 200 after the restart");
    const back = await mon(["--url", url(), "--state", state, "--queue-depth-warn", "1000"]);
    expect(back.lines).toEqual([`CLEARED server_unreachable url=${url()}`, ...back.lines.slice(1)]);
    expect(back.lines.slice(1).every((l) => l.startsWith("CLEARED"))).toBe(true); // the queue alarm above cleared too
    expect(back.code).toBe(0);
  });
});

describe("against served metric text", () => {
  let metrics = "";
  let ready = { status: 200, body: '{"ready":true}' };
  let metricsStatus = 200;
  let fake: Server<undefined>;
  const url = () => `http://127.0.0.1:${fake.port}/metrics`;

  beforeAll(() => {
    fake = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const path = new URL(req.url).pathname;
        if (path === "/metrics") return new Response(metrics, { status: metricsStatus });
        if (path === "/readyz") return new Response(ready.body, { status: ready.status });
        return new Response("not found\n", { status: 404 });
      },
    });
  });
  afterAll(() => fake.stop(true));

  /** Metric text with every metric the monitor reads, at harmless values, with overrides. */
  const text = (o: { depth?: number[]; age?: number[]; lag?: number; canary?: number; rss?: number; drop?: string[] } = {}) =>
    [
      "# HELP switchboard_queue_depth Items queued.",
      "# TYPE switchboard_queue_depth gauge",
      ...(o.depth ?? [0, 0]).map((v, i) => `switchboard_queue_depth{shard="${i}"} ${v}`),
      ...(o.age ?? [0, 0]).map((v, i) => `switchboard_queue_oldest_age_seconds{shard="${i}"} ${v}`),
      `switchboard_event_loop_lag_seconds ${o.lag ?? 0.002}`,
      `switchboard_canary_age_seconds ${o.canary ?? 1.5}`,
      `switchboard_process_resident_bytes ${o.rss ?? 50_000_000}`,
      'switchboard_closes_total{reason="a \\"quoted\\" } brace"} 7',
    ]
      .filter((l) => !(o.drop ?? []).some((d) => l.startsWith(d)))
      .join("\n") + "\n";

  const reset = () => {
    metrics = text();
    ready = { status: 200, body: '{"ready":true}' };
    metricsStatus = 200;
  };

  test("breach: ALARM on every run while it lasts; cleared: CLEARED once, then silence", async () => {
    reset();
    const state = freshState();
    metrics = text({ lag: 2.5 });
    for (let i = 0; i < 2; i++) {
      const r = await mon(["--url", url(), "--state", state]);
      expect(r.lines).toEqual(["ALARM event_loop_lag value=2.5 threshold=1 level=critical"]);
      expect(r.code).toBe(2);
    }
    expect(Object.keys(JSON.parse(readFileSync(state, "utf8")).alarms)).toEqual(["event_loop_lag"]);
    metrics = text({ lag: 0.01 });
    const cleared = await mon(["--url", url(), "--state", state]);
    expect(cleared.lines).toEqual(["CLEARED event_loop_lag value=0.01"]);
    expect(cleared.code).toBe(0);
    const quiet = await mon(["--url", url(), "--state", state]);
    expect(quiet.lines).toEqual([]);
    expect(quiet.code).toBe(0);
  });

  test("queue depth is summed over shards, oldest age is the largest shard's; a warning escalates to critical", async () => {
    reset();
    const state = freshState();
    const flags = ["--queue-depth-warn", "10", "--queue-depth-crit", "20", "--queue-oldest-age-warn", "5m", "--queue-oldest-age-crit", "1h"];
    metrics = text({ depth: [6, 7], age: [100, 400] }); // each shard under 10, together 13; 400 s > 5 min
    const w = await mon(["--url", url(), "--state", state, ...flags]);
    expect(w.lines).toEqual(["ALARM queue_depth value=13 threshold=10 level=warning", "ALARM queue_oldest_age value=400 threshold=300 level=warning"]);
    expect(w.code).toBe(1);
    metrics = text({ depth: [6, 17], age: [100, 400] });
    const c = await mon(["--url", url(), "--state", state, ...flags]);
    expect(c.lines).toEqual(["ALARM queue_depth value=23 threshold=20 level=critical", "ALARM queue_oldest_age value=400 threshold=300 level=warning"]);
    expect(c.code).toBe(2);
    metrics = text({ depth: [1, 2], age: [100, 400] });
    const one = await mon(["--url", url(), "--state", state, ...flags]);
    expect(one.lines).toEqual(["ALARM queue_oldest_age value=400 threshold=300 level=warning", "CLEARED queue_depth value=3"]);
    expect(one.code).toBe(1);
  });

  test("a metric the server does not expose is UNKNOWN: reported on every run, not an alarm, and a raised alarm stays raised", async () => {
    reset();
    const state = freshState();
    metrics = text({ canary: 500 });
    expect((await mon(["--url", url(), "--state", state])).lines).toEqual(["ALARM canary_age value=500 threshold=60 level=critical"]);
    metrics = text({ drop: ["switchboard_canary_age_seconds", "switchboard_queue_depth"] });
    for (let i = 0; i < 2; i++) {
      const r = await mon(["--url", url(), "--state", state]);
      expect(r.lines).toEqual([`UNKNOWN queue_depth metric=switchboard_queue_depth not exposed by ${url()}`, `UNKNOWN canary_age metric=switchboard_canary_age_seconds not exposed by ${url()}`]);
      expect(r.code).toBe(0);
    }
    metrics = text();
    expect((await mon(["--url", url(), "--state", state])).lines).toEqual(["CLEARED canary_age value=1.5"]);
  });

  test("/readyz: 503 is a critical alarm with the server's reason; 404 is UNKNOWN", async () => {
    reset();
    const state = freshState();
    ready = { status: 503, body: '{"ready":false,"reason":"draining"}' };
    const r = await mon(["--url", url(), "--state", state]);
    expect(r.lines).toEqual(["ALARM readyz value=503 threshold=200 reason=draining level=critical"]);
    expect(r.code).toBe(2);
    ready = { status: 404, body: "not found\n" };
    const u = await mon(["--url", url(), "--state", state]);
    expect(u.lines).toEqual([`UNKNOWN readyz http://127.0.0.1:${fake.port}/readyz answered 404: this server has no readiness endpoint`]);
    expect(u.code).toBe(0);
    ready = { status: 200, body: '{"ready":true}' };
    expect((await mon(["--url", url(), "--state", state])).lines).toEqual(["CLEARED readyz value=200"]);
  });

  test("/metrics answering an error status counts as unreachable (exit 3); alarms raised before are kept", async () => {
    reset();
    const state = freshState();
    metrics = text({ rss: 9 * 1024 ** 3 });
    expect((await mon(["--url", url(), "--state", state])).code).toBe(2);
    metricsStatus = 500;
    const r = await mon(["--url", url(), "--state", state]);
    expect(r.code).toBe(3);
    expect(r.lines).toEqual([`ALARM server_unreachable url=${url()} error="HTTP 500 from ${url()}" level=critical`]);
    metricsStatus = 200;
    const back = await mon(["--url", url(), "--state", state]);
    expect(back.lines).toEqual(["ALARM memory value=9663676416 threshold=8589934592 level=critical", `CLEARED server_unreachable url=${url()}`]);
  });

  test("thresholds take units; wrong arguments exit 4; --help exits 0; a damaged state file is replaced", async () => {
    reset();
    const state = freshState();
    metrics = text({ rss: 3 * 1024 ** 3 });
    expect((await mon(["--url", url(), "--state", state, "--memory-warn", "2G", "--memory-crit", "4G"])).lines).toEqual([
      "ALARM memory value=3221225472 threshold=2147483648 level=warning",
    ]);
    for (const bad of [["--memory-warn", "2Q"], ["--frobnicate", "1"], ["--event-loop-lag-warn", "2", "--event-loop-lag-crit", "1"], ["--url", "not a url"], ["stray"]]) {
      const r = await mon(["--url", url(), "--state", state, ...bad]);
      expect(r.code).toBe(4);
      expect(r.stderr).toStartWith("switchboard-mon: ");
    }
    const help = await mon(["--help"]);
    expect(help.code).toBe(0);
    expect(help.lines.join("\n")).toContain("--queue-depth-warn");
    writeFileSync(state, "{not json");
    const r = await mon(["--url", url(), "--state", state]);
    expect(r.stderr).toContain("is unreadable; starting afresh");
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(state, "utf8"))).toEqual({ alarms: {} });
  });
});

/**
 * The load generator itself: tiny `idle`, `pairs`, `offline`, `crash`,
 * `login-storm`, `reconnect-storm` and `http` runs against spawned servers,
 * a `--target` run with identities from `provision`, checking the result
 * line's shape and integrity counters (never timings), plus the lean
 * client's hand-written frames against the project's codec and validator.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { spawnServer } from "../../loadtest/proc.ts";
import { decodeBody, encodeBody, withField } from "../../src/protocol/codec.ts";
import { validateClient } from "../../src/protocol/stanzas.ts";
import { LeanConn, msgTemplate, scanFrame, setIdPrefix, Scanned, K_MSG, K_RCPT, K_SENT } from "../../loadtest/lean.ts";
import { buildBinary } from "../helpers/binary.ts";
import { acceptanceRecords } from "../wire/util.ts";
import { gcPauses } from "../../loadtest/sample.ts";

const ROOT = resolve(import.meta.dir, "../..");

async function runLoadtest(args: string[]): Promise<{ code: number; out: string; err: string; result: any }> {
  const p = Bun.spawn([process.execPath, join(ROOT, "loadtest/main.ts"), ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const lines = out.trim().split("\n");
  const last = lines[lines.length - 1] ?? "";
  let result: any = null;
  try {
    result = JSON.parse(last);
  } catch {}
  return { code, out, err, result };
}

function expectCommonFields(r: any): void {
  for (const k of ["scenario", "params", "sent", "delivered", "lost", "duplicates", "out_of_order", "sent_per_s", "delivered_per_s", "latency_ms", "server", "msgs_per_server_cpu_s"]) {
    expect(r).toHaveProperty(k);
  }
  for (const k of ["p50", "p90", "p99", "p999", "max"]) expect(typeof r.latency_ms[k]).toBe("number");
  for (const k of ["cpu_s", "cpu_pct", "rss_kb"]) expect(r.server).toHaveProperty(k);
}

for (const transport of ["tcp", "ws"] as const) test(`idle: 50 ${transport} connections log in; memory per connection is reported`, async () => {
  const { code, out, err, result } = await runLoadtest(["idle", "--spawn", "--conns", "50", "--settle", "0", "--transport", transport]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  // Exactly one JSON line, and it is the last one.
  expect(out.trim().split("\n").filter((l) => l.startsWith("{")).length).toBe(1);
  expectCommonFields(result);
  expect(result.scenario).toBe("idle");
  expect(result.params.conns).toBe(50);
  expect(result.logins.online).toBe(50);
  expect(result.logins.failed).toBe(0);
  expect(result.server.sessions).toBe(50);
  expect(result.params.transport).toBe(transport);
  // The server's own count: they came over this transport (the warm-up's connections may not be gone yet).
  expect(result.server.connections_on_transport).toBeGreaterThanOrEqual(50);
  expect(typeof result.server.bytes_per_conn).toBe("number");
  expect(result.server.rss_kb).toBeGreaterThan(0);
  expect(result.lost).toBe(0);
}, 30_000);

test("idle --warm: a storm closed again before a second baseline; both the raw and the warmed figure are reported", async () => {
  const { code, out, err, result } = await runLoadtest(["idle", "--spawn", "--conns", "40", "--warm", "30", "--settle", "0"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expect(result.params.warm).toBe(30);
  expect(result.logins.online).toBe(40);
  // The warm storm's devices are gone again: only the measured ones hold a session.
  expect(result.server.sessions).toBe(40);
  expect(typeof result.server.bytes_per_conn).toBe("number");
  expect(typeof result.server.bytes_per_conn_warmed).toBe("number");
  expect(result.server.rss_kb_before_warmed).toBeGreaterThan(0);
  expect(out).toContain("warm-up: 30 logins, then closed");
  expect(out).toContain("warmed (from the baseline after the 30-login warm storm)");
}, 30_000);

test("idle --probe: the server's own readings (preloaded loadtest/probe.ts) at each baseline, the reading and after a full collection", async () => {
  const { code, out, err, result } = await runLoadtest(["idle", "--spawn", "--conns", "40", "--warm", "30", "--settle", "0", "--probe"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  const p = result.probe;
  for (const k of ["raw", "warmed", "reading", "after_full_gc"]) {
    const r = p[k];
    // Each part of smaps was found (the arena, bun's own text, JIT code) and heapStats was read in the server.
    for (const f of ["rss_kb", "arena_kb", "text_kb", "jit_kb", "heap_size", "heap_capacity", "objects"]) expect([k, f, r[f] > 0]).toEqual([k, f, true]);
    expect(r.arena_kb + r.text_kb).toBeLessThan(r.rss_kb);
    // This tree's pool is counted: the logins' frames borrowed small buffers.
    expect(r.pool.small).toBeGreaterThanOrEqual(1);
  }
  // The readings are the server's, taken in turn: the baseline's JS objects are fewer than those of 40 sessions.
  expect(p.reading.objects).toBeGreaterThan(p.raw.objects);
  const bare = await runLoadtest(["idle", "--target", "127.0.0.1:1", "--data-dir", "/nonexistent", "--probe"]);
  expect(bare.code).not.toBe(0);
  expect(bare.err + bare.out).toContain("--probe reads a server it spawns (--spawn)");
}, 30_000);

for (const transport of ["tcp", "ws"] as const) test(`pairs: 4 pairs, 200 messages, full receipt chain, nothing lost or duplicated (${transport})`, async () => {
  const { code, out, err, result } = await runLoadtest(["pairs", "--spawn", "--pairs", "4", "--messages", "200", "--window", "8", "--transport", transport]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectCommonFields(result);
  expect(result.scenario).toBe("pairs");
  expect(result.params.transport).toBe(transport);
  expect(result.sent).toBe(200);
  expect(result.acked).toBe(200);
  expect(result.delivered).toBe(200);
  expect(result.receipts).toBe(200);
  expect(result.lost).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.errors).toBe(0);
  expect(result.disconnects).toBe(0);
  expect(result.latency_ms.count).toBe(200);
  expect(result.server.alive).toBe(true);
  expect(typeof result.msgs_per_server_cpu_s === "number" || result.msgs_per_server_cpu_s === null).toBe(true);
  // Write-back: a rate in [0, 1] from the /metrics deltas, and the commit p99.
  expect(result.write_back_hit_rate).toBeGreaterThanOrEqual(0);
  expect(result.write_back_hit_rate).toBeLessThanOrEqual(1);
  expect(typeof result.commit_p99_ms).toBe("number");
  expect(result.server_thread_cpu_s.main).toBeGreaterThan(0); // the event loop's share, by /proc/PID/task
  expect(result.server_gc_pauses).toBeNull(); // only with --server-gc-log
}, 30_000);

test("pairs --server-gc-log: the spawned server's GC pauses of the measured phase only, from JSC's log", async () => {
  const { code, out, err, result } = await runLoadtest(["pairs", "--spawn", "--pairs", "4", "--rate", "2000", "--warmup", "1", "--duration", "3", "--server-gc-log"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  const gc = result.server_gc_pauses;
  // 6 000 messages allocate far more than JSC's 8 MB Eden: collections happen (11 in a run here), each with its pauses.
  expect(gc.n).toBeGreaterThan(0);
  expect(gc.totalMs).toBeGreaterThan(0);
  expect(gc.max).toBeGreaterThanOrEqual(gc.p99);
  expect(out).toContain("server GC pauses in the measured phase: ");
}, 30_000);

test("gcPauses reads only the pauses between two offsets of the log", () => {
  const dir = mkdtempSync(join(tmpdir(), "sb-gclog-"));
  try {
    const before = "[GC<0x1>: START M 8875kb => EdenCollection, a=0kb p=9.5ms (max 9.5)...]\n";
    const inside =
      '{"level":"warn","msg":"not a GC line"}\n' +
      "[GC<0x1>: M a=883kb hf=0.269 o=1 b=2 0+2 p=1.25ms (max 9.5)...]\n" +
      "[GC<0x1>: M a=1897kb i#2:N<WsOJw>Pbc 2+2 p=0.5ms (max 9.5) => 10532kb, p=3.25ms (max 9.5), cycle 37.6ms END]\n";
    const path = join(dir, "server.log");
    writeFileSync(path, before + inside + before);
    const from = Buffer.byteLength(before);
    const g = gcPauses(path, from, from + Buffer.byteLength(inside))!;
    expect(g).toEqual({ n: 3, totalMs: 5, p50: 1.25, p99: 3.25, max: 3.25, over1: 2, over2: 1, over2Ms: 3.3 });
    expect(gcPauses(path, 0, from)!.n).toBe(1);
    expect(gcPauses(path, from, from + 10)).toBeNull();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("pairs --confirm on|off: the lean client confirms the sents it holds (released, no record kept), or not (a row each)", async () => {
  for (const confirm of ["on", "off"] as const) {
    const dir = mkdtempSync(join(tmpdir(), "sb-lt-confirm-"));
    try {
      // No canary: its own confirmed rounds would count among the releases.
      const args = ["pairs", "--spawn", "--pairs", "2", "--messages", "100", "--window", "8", "--data-dir", dir, "--server-flags", "--canary-interval 0", "--confirm", confirm];
      const { code, out, err, result } = await runLoadtest(args);
      if (code !== 0 || !result) console.error(out, err);
      expect(code).toBe(0);
      expect(result.params.confirm).toBe(confirm === "on");
      expect(result.delivered).toBe(100);
      const released = result.server.counters.dedup_released;
      // On: every sent is confirmed on the read that brought it, though the last may come after the closing sample.
      if (confirm === "on") (expect(released).toBeGreaterThan(0), expect(released).toBeLessThanOrEqual(100));
      else expect(released).toBe(0);
      // The server was stopped cleanly: what is still unconfirmed would have been written as `unconfirmed`.
      const rows = acceptanceRecords({ dataDir: dir });
      if (confirm === "on") (expect(rows.accepted).toBe(0), expect(rows.unconfirmed).toBeLessThanOrEqual(100 - released));
      else expect(rows).toEqual({ accepted: 100, unconfirmed: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}, 60_000);

test("offline: 2 senders queue 500 messages for an offline device, which drains them exactly once", async () => {
  const { code, out, err, result } = await runLoadtest(["offline", "--spawn", "--senders", "2", "--messages", "500"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectCommonFields(result);
  expect(result.scenario).toBe("offline");
  expect(result.params.recipients).toBe(1);
  expect(result.sent).toBe(500);
  expect(result.acked).toBe(500);
  expect(result.delivered).toBe(500);
  expect(result.lost).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.errors).toBe(0);
  // Every message was queued while the recipient was offline: no write-back possible.
  expect(result.server.counters.queue_write_back_hits).toBe(0);
  expect(result.server.counters.deliveries_pushed).toBe(0);
  expect(typeof result.queued_per_s).toBe("number");
  expect(typeof result.drained_per_s).toBe("number");
  expect(result.sent_per_s).toBe(result.queued_per_s);
  expect(result.delivered_per_s).toBe(result.drained_per_s);
  expect(result.latency_ms.count).toBe(500);
}, 30_000);

test("crash: 3 SIGKILLs under load, every acknowledged message arrives exactly once", async () => {
  const { code, out, err, result } = await runLoadtest(["crash", "--kills", "3", "--senders", "2", "--interval", "100-300"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectCommonFields(result);
  expect(result.scenario).toBe("crash");
  expect(result.params.kills).toBe(3);
  expect(result.acked).toBeGreaterThan(0);
  expect(result.delivered).toBeGreaterThanOrEqual(result.acked * result.params.devices);
  expect(result.lost).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.seq_reused).toBe(0);
}, 30_000);

function expectOneJsonLineLast(out: string): void {
  const lines = out.trim().split("\n");
  expect(lines.filter((l) => l.startsWith("{")).length).toBe(1);
  expect(lines[lines.length - 1]!.startsWith("{")).toBe(true);
}

test("login-storm: 120 devices log in at once; every one gets online", async () => {
  const { code, out, err, result } = await runLoadtest(["login-storm", "--spawn", "--conns", "120", "--settle", "0"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectOneJsonLineLast(out);
  expectCommonFields(result);
  expect(result.scenario).toBe("login-storm");
  expect(result.params.concurrency).toBe(0);
  expect(result.logins.online).toBe(120);
  expect(result.logins.failed).toBe(0);
  // Every login is in the timeline and in the latency histogram.
  expect(result.logins.timeline_100ms.reduce((a: number, b: number) => a + b, 0)).toBe(120);
  expect(result.latency_ms.count).toBe(120);
  expect(result.server.sessions).toBe(120);
  expect(typeof result.server.cpu_us_per_login).toBe("number");
  expect(typeof result.server.bytes_per_conn).toBe("number");
}, 60_000);

async function reconnectStorm(cut: "client" | "kernel", extra: string[] = []) {
  const { code, out, err, result } = await runLoadtest(["reconnect-storm", "--spawn", "--conns", "60", "--per-sender", "25", "--offline", "0.5", "--cut", cut, "--drain", "10", ...extra]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectOneJsonLineLast(out);
  expectCommonFields(result);
  expect(result.scenario).toBe("reconnect-storm");
  expect(result.params.senders).toBe(3);
  // 60 recipients × (2 acked + 1 held unacked + 2 queued while away), each acknowledged and delivered once.
  expect(result.sent).toBe(300);
  expect(result.delivered).toBe(300);
  expect(result.batches.map((b: any) => b.receipts)).toEqual([120, 60, 120]);
  // The held items came again after the cut (at-least-once), once each; nothing else did.
  expect(result.redelivered).toBe(60);
  expect(result.not_redelivered).toBe(0);
  expect(result.lost).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.unknown).toBe(0);
  expect(result.failed_devices).toBe(0);
  expect(result.latency_ms.count).toBe(60);
  expect(result.queued_delivery_ms.count).toBe(180);
  expect(typeof result.all_back_s).toBe("number");
  expect(typeof result.all_queued_delivered_s).toBe("number");
  expect(result.server.alive).toBe(true);
  // The server saw every connection go (65 of them: 60 recipients and 3 senders... plus none other).
  expect(Object.values(result.server.closes as Record<string, number>).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(63);
  return result;
}

test("reconnect-storm (clients cut their sockets): held items come again, queued ones arrive, nothing lost or doubled", async () => {
  await reconnectStorm("client");
}, 90_000);

test("reconnect-storm --tickets on --tls-sessions on over TLS: every reconnect resumes both, with the same integrity", async () => {
  const result = await reconnectStorm("client", ["--transport", "tls", "--tickets", "on", "--tls-sessions", "on"]);
  expect(result.params).toMatchObject({ transport: "tls", tickets: true, tls_sessions: true });
  // 60 recipients and 3 senders come back after the cut, each with its ticket and its TLS session (their first logins were full ones).
  expect(result.resumed.tickets).toBeGreaterThanOrEqual(63);
  expect(result.resumed.ticket_refused).toBe(0);
  expect(result.resumed.tls).toBeGreaterThanOrEqual(63);
  expect(result.server.logins).toEqual({ ok: 0, resumed: result.resumed.tickets, ticket_refused: 0 });
  expect(result.server.tls_handshakes).toEqual({ full: 0, resumed: result.resumed.tls });
}, 90_000);

test("reconnect-storm --batches 1,0,0 (the bare reconnect): the devices come back to an empty queue and the storm ends when all are back", async () => {
  // Before the storm worker ended it on all_back, a storm with nothing queued waited for a delivery that never came.
  const { code, out, err, result } = await runLoadtest(["reconnect-storm", "--spawn", "--conns", "60", "--per-sender", "25", "--offline", "0.5", "--cut", "client", "--drain", "10", "--tickets", "on", "--batches", "1,0,0"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expect(result.params.batches).toEqual([1, 0, 0]);
  expect(result.sent).toBe(60);
  expect(result.delivered).toBe(60);
  expect(result.redelivered).toBe(0);
  expect(result.lost + result.duplicates + result.out_of_order + result.unknown + result.failed_devices).toBe(0);
  expect(result.latency_ms.count).toBe(60); // every recipient came back
  expect(result.queued_delivery_ms.count).toBe(0); // and nothing waited for it
  expect(result.all_queued_delivered_s).toBe(result.all_back_s);
  expect(result.server.logins.resumed).toBeGreaterThanOrEqual(63);
  expect(typeof result.server.cpu_us_per_reconnect).toBe("number");
}, 90_000);

// `ss -K` needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY; where it is missing the scenario says so (--cut client works anywhere).
const ssKill = Bun.spawnSync(["ss", "-K", "-t", "dst", "127.0.0.1", "dport", "=", "1"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
test.skipIf(!ssKill)("reconnect-storm (ss -K destroys every connection): same integrity", async () => {
  await reconnectStorm("kernel");
}, 90_000);

test("http: autocannon against /healthz and /metrics; a path the server does not serve is reported, not counted", async () => {
  const { code, out, err, result } = await runLoadtest(["http", "--spawn", "--duration", "1", "--connections", "2", "--paths", "/healthz,/metrics,/no-such-path"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectOneJsonLineLast(out);
  expectCommonFields(result);
  expect(result.scenario).toBe("http");
  expect(result.paths["/healthz"].served).toBe(true);
  expect(result.paths["/metrics"].served).toBe(true);
  expect(result.paths["/no-such-path"].served).toBe(false);
  expect(result.sent).toBeGreaterThan(0);
  expect(result.sent).toBe(result.paths["/healthz"].requests + result.paths["/metrics"].requests);
  expect(result.delivered).toBe(result.sent);
  expect(result.lost).toBe(0);
  expect(result.latency_ms.count).toBe(result.sent);
}, 60_000);

test("--target: identities from `provision` (no access to the data directory at run time), pairs against a running server", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sb-lt-target-"));
  const srv = await spawnServer(join(dir, "data"), null, ["--tls-port", "-1"]);
  try {
    const ids = join(dir, "ids.json");
    const p = await runLoadtest(["provision", "--data-dir", join(dir, "data"), "--count", "6", "--out", ids]);
    expect(p.code).toBe(0);
    expect(p.result.accounts).toBe(6);
    // Twice with the same identities: message ids must not repeat across runs (the server remembers every
    // id it accepted from a device and answers a repeat with the old `sent`, delivering nothing).
    for (let run = 0; run < 2; run++) {
      const { code, out, err, result } = await runLoadtest(["pairs", "--target", `127.0.0.1:${srv.tcp}`, "--ids", ids, "--http-port", String(srv.http), "--pairs", "3", "--messages", "90", "--worker-cpus", ""]);
      if (code !== 0 || !result) console.error(out, err);
      expect(code).toBe(0);
      expectCommonFields(result);
      expect(result.params.mode_server).toBe("target");
      expect(result.server.pid).toBe(srv.pid);
      expect(result.delivered).toBe(90);
      expect(result.receipts).toBe(90);
      expect(result.lost).toBe(0);
      expect(result.server.counters.messages_accepted).toBe(90);
    }
    const storm = await runLoadtest(["reconnect-storm", "--target", `127.0.0.1:${srv.tcp}`, "--ids", ids, "--http-port", String(srv.http), "--conns", "4", "--per-sender", "2", "--offline", "0.2", "--cut", "client", "--worker-cpus", "", "--drain", "10"]);
    if (storm.code !== 0) console.error(storm.out, storm.err);
    expect(storm.code).toBe(0);
    expect(storm.result.delivered).toBe(20);
    expect(storm.result.lost).toBe(0);
    // Too few identities: refused before any load, with the fix in the message.
    const few = await runLoadtest(["idle", "--target", `127.0.0.1:${srv.tcp}`, "--ids", ids, "--conns", "50"]);
    expect(few.code).toBe(2);
    expect(few.err).toContain("provision more");
  } finally {
    srv.proc.kill("SIGTERM");
    await srv.proc.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);

test("groups: 3 groups of 5, 60 gmsg, every other member gets each once, in order, with every receipt", async () => {
  const { code, out, err, result } = await runLoadtest(["groups", "--spawn", "--groups", "3", "--members", "5", "--messages", "60"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectOneJsonLineLast(out);
  expectCommonFields(result);
  expect(result.scenario).toBe("groups");
  expect(result.sent).toBe(60);
  expect(result.acked).toBe(60);
  // Fan-out: each gmsg to the 4 members other than its sender, and a dlv receipt from each of them.
  expect(result.delivered).toBe(240);
  expect(result.receipts).toBe(240);
  expect(result.lost).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.errors).toBe(0);
  expect(result.unknown ?? 0).toBe(0);
  expect(result.latency_ms.count).toBe(240);
}, 60_000);

test("groups --spread: 1 group of 6 split over 2 workers; copies summed over workers, every receipt back", async () => {
  const { code, out, err, result } = await runLoadtest(["groups", "--spawn", "--groups", "1", "--members", "6", "--workers", "2", "--spread", "--messages", "40"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectOneJsonLineLast(out);
  expectCommonFields(result);
  expect(result.params.spread).toBe(true);
  expect(result.params.workers).toBe(2);
  // Home worker: creator/senders 0 and 1 plus members 3 and 5; the other worker: members 2 and 4.
  expect(out).toContain("members per worker: 4, 2");
  expect(result.sent).toBe(40);
  expect(result.acked).toBe(40);
  // 5 copies per gmsg, 3 or 4 of them to the other process; the senders' dlv receipts count all 5.
  expect(result.delivered).toBe(200);
  expect(result.receipts).toBe(200);
  expect(result.lost).toBe(0);
  expect(result.undelivered_at_end).toBe(0);
  expect(result.no_receipt_at_end).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.errors).toBe(0);
  expect(result.latency_ms.count).toBe(200);
}, 60_000);

test("flags: --server-flags passes flags on to the server; an unknown flag is refused with the closest known one", async () => {
  const { code, out, err, result } = await runLoadtest(["offline", "--spawn", "--senders", "1", "--messages", "20", "--server-flags", "--queue-commit-ms 3"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expect(result.params.server_flags).toEqual(["--queue-max-messages", "1000000", "--queue-max-bytes", "1073741824", "--queue-commit-ms", "3"]);
  expect(result.delivered).toBe(20);
  const bad = await runLoadtest(["pairs", "--spawn", "--pair", "3"]);
  expect(bad.code).toBe(2);
  expect(bad.err).toContain("unknown flag --pair (did you mean --pairs?)");
  expect(bad.out).toBe("");
}, 30_000);

test("--transport ws is refused by scenarios whose clients do not speak it, naming the ones that do", async () => {
  const { code, err } = await runLoadtest(["offline", "--spawn", "--transport", "ws"]);
  expect(code).toBe(2);
  expect(err).toContain("--transport ws is for idle and pairs");
});

test("crash refuses --target and says why", async () => {
  const { code, err } = await runLoadtest(["crash", "--target", "127.0.0.1:5222"]);
  expect(code).toBe(2);
  expect(err).toContain("cannot measure a --target server");
});

test("--server-bin: pairs against the compiled binary (npm run build)", async () => {
  const bin = await buildBinary(); // built once per test run (test/helpers/binary.ts), so this never depends on a stale dist/
  const { code, out, err, result } = await runLoadtest(["pairs", "--spawn", "--server-bin", bin, "--pairs", "2", "--messages", "40"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expect(out).toContain("(binary ");
  expect(result.params.mode_server).toBe("spawn");
  expect(result.delivered).toBe(40);
  expect(result.lost).toBe(0);
}, 60_000);

test("lean client: hand-encoded msg, ack and ping are valid protocol frames", () => {
  const c = new LeanConn("alice", 1, null as any, null as any);
  c.sendMsg(12345, msgTemplate("bob", 1, 8), new Uint8Array(8).fill(7));
  c.ack(7);
  c.ack(4294967303); // above 2^32: written as float64, as PROTOCOL.md §3 allows
  c.ping(3);
  (c as any).encodeAcks();
  const out = c.queued();
  const len = out.length;
  const frames: any[] = [];
  for (let off = 0; off < len; ) {
    const n = new DataView(out.buffer, out.byteOffset).getUint32(off);
    const body = decodeBody(out.subarray(off + 4, off + 4 + n));
    const v = validateClient(body);
    expect(v.ok).toBe(true);
    frames.push(body);
    off += 4 + n;
  }
  expect(frames).toEqual([
    { t: "msg", id: "12345", to: "bob", p: [[1, new Uint8Array(8).fill(7)]] },
    { t: "ping", n: 3 },
    { t: "ack", q: [7, 4294967303] },
  ]);
});

test("lean client: the count of sent frames held rides on the ack (sc), or goes alone (PROTOCOL.md §6.2)", () => {
  const c = new LeanConn("alice", 1, null as any, null as any);
  const internals = c as any;
  internals.sentHeld = 3; // three `sent` frames scanned on a confirming connection
  c.ack(9);
  internals.encodeAcks();
  internals.sentHeld = 70_000;
  internals.encodeAcks(); // no ids this time: a bare ack {sc}
  internals.encodeAcks(); // nothing new: no frame
  const out = c.queued();
  const frames: any[] = [];
  for (let off = 0; off < out.length; ) {
    const n = new DataView(out.buffer, out.byteOffset).getUint32(off);
    const body = decodeBody(out.subarray(off + 4, off + 4 + n));
    expect(validateClient(body).ok).toBe(true);
    frames.push(body);
    off += 4 + n;
  }
  expect(frames).toEqual([{ t: "ack", q: [9], sc: 3 }, { t: "ack", sc: 70_000 }]);
});

test("lean client: with an id prefix, ids are written as <prefix><n> and the scanner reads back n", () => {
  setIdPrefix("k3f9a0.");
  try {
    const c = new LeanConn("alice", 1, null as any, null as any);
    c.sendMsg(9007199254740991, msgTemplate("bob", 1, 8), new Uint8Array(8)); // 2^53 - 1: the longest id
    const out = c.queued();
    const n = new DataView(out.buffer, out.byteOffset).getUint32(0);
    const body = out.subarray(4, 4 + n);
    expect(validateClient(decodeBody(body)).ok).toBe(true);
    expect((decodeBody(body) as any).id).toBe("k3f9a0.9007199254740991");
    const s = new Scanned();
    const sent = encodeBody({ t: "sent", id: "k3f9a0.77", to: "bob", seq: 3, ts: 1700000000123 });
    scanFrame(sent, 0, sent.length, s);
    expect([s.kind, s.id]).toEqual([K_SENT, 77]);
    const other = encodeBody({ t: "sent", id: "from-another-client", to: "bob", seq: 4, ts: 1700000000123 });
    scanFrame(other, 0, other.length, s);
    expect(s.id).toBe(-1);
  } finally {
    setIdPrefix("");
  }
});

test("lean client: the scanner reads msg, sent and rcpt as the reference encoder writes them", () => {
  const s = new Scanned();
  const m = encodeBody({ t: "msg", q: 4294967303, id: "42", from: "alice", fd: 1, to: "bob", seq: 42, ts: 1700000000123, p: new Uint8Array([1, 2, 3, 4]) });
  scanFrame(m, 0, m.length, s);
  expect([s.kind, s.q, s.id, s.seq, s.pLen]).toEqual([K_MSG, 4294967303, 42, 42, 4]);
  expect([...m.subarray(s.pOff, s.pOff + s.pLen)]).toEqual([1, 2, 3, 4]);
  const sent = encodeBody({ t: "sent", id: "9", to: "bob", seq: 300, ts: 1700000000123 });
  scanFrame(sent, 0, sent.length, s);
  expect([s.kind, s.id, s.seq]).toEqual([K_SENT, 9, 300]);
  const r = encodeBody({ t: "rcpt", q: 12, k: "dlv", u: "bob", d: 1, w: "bob", seq: 42, id: "7", ts: 1700000000200 });
  scanFrame(r, 0, r.length, s);
  expect([s.kind, s.q, s.id, s.seq, s.dlv, s.sts]).toEqual([K_RCPT, 12, 7, 42, true, -1]);
  const rs = withField(r, "sts", 1700000000123)!; // the server's receipt carrying its message's `sent` (hello sr)
  scanFrame(rs, 0, rs.length, s);
  expect([s.kind, s.q, s.id, s.seq, s.dlv, s.sts]).toEqual([K_RCPT, 12, 7, 42, true, 1700000000123]);
  const rr = encodeBody({ t: "rcpt", q: 13, k: "read", u: "bob", d: 1, w: "bob", seq: 42, ts: 1700000000200 });
  scanFrame(rr, 0, rr.length, s);
  expect([s.kind, s.q, s.id, s.dlv]).toEqual([K_RCPT, 13, -1, false]);
});

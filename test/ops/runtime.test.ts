/**
 * Runtime operations: the metrics added for operators (queue depth and age
 * per shard, write-back ratio, event-loop lag, metrics.enabled), delivery
 * traces (GET /trace and `switchboard trace`), the reserved canary names,
 * and the building blocks of admission control (token buckets, the lag
 * monitor, the order of the checks).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventLoopMonitor, Metrics } from "../../src/core/metrics.ts";
import { Admission, KeyedTokenBuckets, TokenBucket } from "../../src/core/ratelimit.ts";
import { Trace, traceHash } from "../../src/core/trace.ts";
import { ItemKind, type QueueItem } from "../../src/store/queue.ts";
import { BUN, MAIN, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { barrier, enc, msgFrame, rawLogin } from "../wire/util.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";

const ENV = CLEAN_ENV;
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn([BUN, MAIN, ...args], { env: ENV, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

/** Every sample of a labelled gauge family, summed. */
async function sum(srv: TestServer, name: string): Promise<number> {
  const { text } = await srv.http_get("/metrics");
  return text.split("\n").filter((l) => l.startsWith(`${name}{`)).reduce((n, l) => n + Number(l.split(" ").pop()), 0);
}

describe("building blocks", () => {
  test("TokenBucket: a burst, then one token per 1/rate s, and the wait until the next", () => {
    const b = new TokenBucket(2, 3, 0);
    expect([b.take(0), b.take(0), b.take(0)]).toEqual([0, 0, 0]);
    expect(b.take(0)).toBe(500); // 2 a second: the next token in 500 ms
    expect(b.take(250)).toBe(250);
    expect(b.take(500)).toBe(0);
    expect(b.take(10_000)).toBe(0); // refilled, but never above the burst:
    expect([b.take(10_000), b.take(10_000), b.take(10_000)]).toEqual([0, 0, 500]);
  });

  test("KeyedTokenBuckets: one bucket per key; sweep forgets the full ones only", () => {
    const k = new KeyedTokenBuckets(1, 2);
    expect([k.take("a", 0), k.take("a", 0), k.take("a", 0)]).toEqual([0, 0, 1000]);
    expect(k.take("b", 0)).toBe(0); // another key is not affected
    expect(k.take("a", 3000)).toBe(0);
    k.sweep(4500); // b is full again (untouched for 2 x 1 s), a was used 1.5 s ago and may not be
    expect(k.size).toBe(1);
    // a kept its state: 1 token left at 3000, 2 (the burst) by 4500
    expect([k.take("a", 4500), k.take("a", 4500), k.take("a", 4500)]).toEqual([0, 0, 1000]);
    k.sweep(10_000);
    expect(k.size).toBe(0);
  });

  test("Admission: memory, then lag, then the bucket; retry-after jittered in [base, 2 x base)", () => {
    const load = { recentMs: 0, rss: 0 };
    const a = new Admission({ loginRate: 1, loginBurst: 1, maxLagMs: 500, maxRss: 1000, retryAfterMs: 1000 }, load);
    expect(a.login(0)).toBeNull();
    const r = a.login(0)!;
    expect(r.reason).toBe("login_rate");
    expect(r.retryMs).toBeGreaterThanOrEqual(1000);
    expect(r.retryMs).toBeLessThan(2000);
    load.recentMs = 600;
    expect(a.login(10_000)!.reason).toBe("lag"); // checked before the bucket, which is not charged
    load.rss = 2000;
    expect(a.login(10_000)!.reason).toBe("memory");
    load.recentMs = 0;
    load.rss = 0;
    expect(a.login(10_000)).toBeNull(); // the bucket still had its token
  });

  test("EventLoopMonitor: a loop blocked for 300 ms shows as lag; an idle one does not", async () => {
    const h = new Metrics().histogram("lag", "lag");
    const m = new EventLoopMonitor(h, 50);
    m.start();
    try {
      await Bun.sleep(300);
      const idle = m.recentMs;
      const t = performance.now();
      while (performance.now() - t < 300) {} // busy: timers cannot fire
      await Bun.sleep(120);
      expect(m.recentMs).toBeGreaterThanOrEqual(200); // fired at least 250 ms late
      expect(m.recentMs).toBeGreaterThan(idle);
      expect(h.count).toBeGreaterThan(3);
      expect(m.rss).toBeGreaterThan(0);
    } finally {
      m.stop();
    }
  });

  test("Trace: same client id from two senders, same qid in two shards, eviction, read markers cover a prefix", () => {
    const t = new Trace(3);
    const item = (account: string, device: number, qid: number, from: string, cid: string, seq: number): QueueItem => ({
      qid, account, device, kind: ItemKind.MESSAGE, fromAccount: from, fromDevice: 1, conv: account, cid, seq, ts: 1, body: new Uint8Array(0),
    });
    t.accepted("ann", 1, "x", "bob", 1, 100);
    const a1 = item("bob", 1, 7, "ann", "x", 1);
    t.enqueued(a1);
    t.accepted("cid", 1, "x", "bob", 2, 200); // another sender, the same client id
    const c1 = item("bob", 1, 8, "cid", "x", 2);
    const c2 = item("cid", 2, 7, "cid", "x", 2); // qid 7 again: another shard
    t.enqueued(c1);
    t.enqueued(c2);
    t.enqueued(item("bob", 2, 9, "ann", "x", 1)); // not the current message: ignored
    expect(t.find("x").map((e) => e.from)).toEqual(["cid", "ann"]);
    expect(t.find("x", "ann")[0]!.copies.map((c) => c.q)).toEqual([7]);
    t.pushed(a1);
    t.pushed(a1); // a redelivery
    t.acked(c2);
    expect(t.find("x", "ann")[0]!.copies[0]).toMatchObject({ pushes: 2, acked: null });
    expect(t.find("x", "cid")[0]!.copies.map((c) => c.acked !== null)).toEqual([false, true]);
    t.durable("cid", 1, "x");
    expect(t.find("x", "ann")[0]!.durable).toBeNull();
    expect(t.find("x", "cid")[0]!.durable).not.toBeNull();
    t.accepted("ann", 1, "y", "bob", 3, 300);
    t.read("bob", 1, "ann", 1); // covers ann's seq 1, not seq 3
    expect(t.find("x", "ann")[0]!.read).toMatchObject({ account: "bob", device: 1 });
    expect(t.find("y")[0]!.read).toBeNull();
    t.read("bob", 2, "cid", 5);
    expect(t.find("x", "cid")[0]!.read).toMatchObject({ device: 2 });
    t.accepted("ann", 1, "z", "bob", 4, 400);
    t.read("bob", 1, "ann", 10);
    expect(t.find("y")[0]!.read).toMatchObject({ device: 1 });
    expect(t.find("z")[0]!.read).toMatchObject({ device: 1 });
    // Bounded: `size` messages' worth of events (six each); older ones fall out, whole or in part.
    for (let n = 0; n < 20; n++) t.accepted("ann", 1, `f${n}`, "bob", 10 + n, 500);
    expect(t.find("x")).toEqual([]);
    expect(t.held).toBe(18);
    t.acked(a1); // an event whose message is gone: kept, harmless
    expect(t.find("f19").length).toBe(1);
  });

  test("Metrics({enabled: false}): counters and histograms record nothing, gauges still read", () => {
    const m = new Metrics({ enabled: false });
    const c = m.counter("c_total", "c");
    c.inc(5);
    const h = m.histogram("h_seconds", "h");
    h.record(100);
    m.gauge("g", "g", () => 7);
    expect(c.value).toBe(0);
    expect(h.count).toBe(0);
    expect(m.render()).toContain("g 7");
  });
});

describe("metrics of a running server", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startServer({ args: ["--canary-interval", "0"] });
  });
  afterAll(() => srv?.cleanup());

  test("queue depth and oldest age per shard follow an offline device's queue; lag, ratio and connections are exported", async () => {
    const kfA = await srv.newDevice("qa");
    const kfB = await srv.newDevice("qb");
    const a = await rawLogin(srv, kfA);
    expect(await sum(srv, "switchboard_queue_depth")).toBe(0);
    for (let i = 0; i < 3; i++) a.send(msgFrame(`d${i}`, "qb", [1]));
    for (let i = 0; i < 3; i++) await a.expect("sent");
    expect(await sum(srv, "switchboard_queue_depth")).toBe(3);
    const { text } = await srv.http_get("/metrics");
    const ages = text.split("\n").filter((l) => l.startsWith("switchboard_queue_oldest_age_seconds{")).map((l) => Number(l.split(" ").pop()));
    expect(ages.length).toBe(8); // one per shard (queue.shards defaults to 8)
    expect(ages.filter((x) => x > 0).length).toBe(1); // only qb's shard holds anything
    const b = await rawLogin(srv, kfB);
    const got = [await b.expect("msg"), await b.expect("msg"), await b.expect("msg")];
    b.send({ t: "ack", q: got.map((m) => m.q) });
    await barrier(b);
    await waitFor(async () => (await sum(srv, "switchboard_queue_depth")) === 3, "the dlv receipts to be the only items left"); // three dlv to qa
    await rawLogin(srv, kfA).then(async (a2) => {
      const r = [await a2.expect("rcpt"), await a2.expect("rcpt"), await a2.expect("rcpt")];
      a2.send({ t: "ack", q: r.map((x) => x.q) });
      await barrier(a2);
    });
    await waitFor(async () => (await sum(srv, "switchboard_queue_depth")) === 0, "empty queues");
    expect(await sum(srv, "switchboard_queue_oldest_age_seconds")).toBe(0);
    const ratio = await srv.metric("switchboard_queue_write_back_hit_ratio");
    expect(ratio).toBeGreaterThanOrEqual(0);
    expect(ratio).toBeLessThanOrEqual(1);
    expect(await srv.metric("switchboard_event_loop_lag_seconds")).toBeGreaterThanOrEqual(0);
    await waitFor(async () => (await srv.metric("switchboard_event_loop_lag_samples_seconds_count")) > 0, "a lag sample");
    expect(await srv.metric("switchboard_connections", '{transport="tcp"}')).toBeGreaterThanOrEqual(2);
    expect(await srv.metric("switchboard_connections_max")).toBeGreaterThan(0);
  });

  test("metrics.enabled = false: no counting, the gauges still work", async () => {
    const s = await startServer({ args: ["--canary-interval", "0", "--metrics-enabled", "false"] });
    try {
      const a = await rawLogin(s, await s.newDevice("na"));
      await s.newDevice("nb");
      a.send(msgFrame("x", "nb", [1]));
      await a.expect("sent");
      expect(await s.metric("switchboard_frames_in_total")).toBe(0);
      expect(await s.metric("switchboard_messages_accepted_total")).toBe(0);
      expect(await s.metric("switchboard_sessions")).toBe(1);
      expect(await sum(s, "switchboard_queue_depth")).toBe(1);
    } finally {
      s.cleanup();
    }
  });
});

describe("delivery traces", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startServer({ args: ["--canary-interval", "0", "--queue-retention", "3", "--queue-expire-every", "1"] });
  });
  afterAll(() => srv?.cleanup());

  test("GET /trace: accepted, durable, each copy pushed / acked or expired, read; never the payload", async () => {
    const alice1 = await srv.newDevice("tal");
    await srv.newDevice("tal"); // alice's second device gets a sync copy, and stays offline
    const bob1 = await srv.newDevice("tbo");
    await srv.newDevice("tbo"); // bob's second device stays offline: its copy expires
    const a = await rawLogin(srv, alice1);
    const b = await rawLogin(srv, bob1);
    const payload = "very secret words";
    a.send({ t: "msg", id: "trace-1", to: "tbo", p: [[1, enc(payload)], [2, enc(payload)]], s: [[2, enc(payload)]] });
    const sent = await a.expect("sent");
    const m = await b.expect("msg");
    b.send({ t: "ack", q: [m.q] });
    b.send({ t: "read", u: "tal", seq: m.seq });
    await barrier(b);
    const get = async () => {
      const r = await srv.http_get("/trace?from=tal&id=trace-1");
      return { status: r.status, text: r.text, body: JSON.parse(r.text) };
    };
    const r = await get();
    expect(r.status).toBe(200);
    expect(r.text).not.toContain(payload);
    expect(r.body.messages.length).toBe(1);
    const e = r.body.messages[0];
    expect(e).toMatchObject({ from: "tal", fd: 1, id: "trace-1", to: "tbo", seq: sent.seq, accepted: sent.ts });
    expect(e.durable).toBeGreaterThanOrEqual(e.accepted);
    expect(e.read).toMatchObject({ account: "tbo", device: 1 });
    const copy = (acct: string, d: number) => e.copies.find((c: { account: string; device: number }) => c.account === acct && c.device === d);
    expect(e.copies.length).toBe(3);
    expect(copy("tbo", 1)).toMatchObject({ kind: "message", q: m.q });
    expect(copy("tbo", 1).pushes).toBe(1);
    expect(copy("tbo", 1).pushed).toBeGreaterThanOrEqual(e.accepted);
    expect(copy("tbo", 1).acked).toBeGreaterThanOrEqual(copy("tbo", 1).pushed);
    expect(copy("tbo", 2)).toMatchObject({ kind: "message", pushed: null, pushes: 0, acked: null });
    expect(copy("tal", 2)).toMatchObject({ kind: "sync", pushed: null, pushes: 0, acked: null });
    // Without the sender, by client id alone.
    expect((await srv.http_get("/trace?id=trace-1")).status).toBe(200);
    expect((await srv.http_get("/trace?from=other&id=trace-1")).status).toBe(404);
    expect((await srv.http_get("/trace")).status).toBe(400);
    // Retention (3 s here) expires the copy bob's offline device never took: the trace says so.
    await waitFor(async () => copyOf(await get(), "tbo", 2).expired !== null, "the offline copy to expire", 30_000);
    expect(copyOf(await get(), "tbo", 1).expired).toBeNull();
  });

  test("`switchboard trace ACCOUNT CID` prints the trace; an unknown id exits 1 and says why", async () => {
    const a = await rawLogin(srv, await srv.newDevice("cla"));
    const b = await rawLogin(srv, await srv.newDevice("clb"));
    a.send(msgFrame("cli-1", "clb", [1]));
    await a.expect("sent");
    const m = await b.expect("msg");
    b.send({ t: "ack", q: [m.q] });
    await barrier(b);
    const port = ["--http-port", String(srv.http)];
    const ok = await cli(["trace", "cla", "cli-1", ...port]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('message "cli-1" from cla device 1 to clb');
    expect(ok.stdout).toMatch(/clb\/1\s+message q \d+: pushed \+\d+ ms, acked \+\d+ ms/);
    const json = await cli(["trace", "cli-1", "--json", ...port]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout).messages[0].id).toBe("cli-1");
    const none = await cli(["trace", "cla", "nope", ...port]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("no trace of message");
  });

  test("trace.sample = 2 traces about every other message, always the same ones; trace.size bounds what is kept", async () => {
    const s = await startServer({ args: ["--canary-interval", "0", "--trace-sample", "2", "--trace-size", "8"] });
    try {
      const a = await rawLogin(s, await s.newDevice("sa"));
      await s.newDevice("sb");
      for (let i = 0; i < 40; i++) a.send(msgFrame(`s${i}`, "sb", [1]));
      for (let i = 0; i < 40; i++) await a.expect("sent");
      const found: string[] = [];
      for (let i = 0; i < 40; i++) if ((await s.http_get(`/trace?from=sa&id=s${i}`)).status === 200) found.push(`s${i}`);
      // Sampled by a hash of the client id; the ring (8 messages x 6 events) keeps the newest of them.
      const sampled = Array.from({ length: 40 }, (_, i) => `s${i}`).filter((id) => traceHash(id) % 2 === 0);
      expect(sampled.length).toBeGreaterThan(10);
      expect(found.length).toBeGreaterThanOrEqual(3);
      expect(found.length).toBeLessThan(sampled.length);
      expect(found).toEqual(sampled.slice(sampled.length - found.length));
    } finally {
      s.cleanup();
    }
  });
});

function copyOf(r: { body: { messages: { copies: { account: string; device: number; expired: number | null }[] }[] } }, acct: string, d: number) {
  return r.body.messages[0]!.copies.find((c) => c.account === acct && c.device === d)!;
}

test("`switchboard user add` and `user code` refuse the names reserved for the canary", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sb-reserved-"));
  try {
    const r = await cli(["user", "add", "switchboard.canary-a", "--data-dir", dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("reserved");
    const c = await cli(["user", "code", "switchboard.canary-b", "--data-dir", dir]);
    expect(c.code).toBe(1);
    expect(c.stderr).toContain("reserved");
    expect((await cli(["user", "add", "switchboardfan", "--data-dir", dir])).code).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * The load generator itself: tiny `idle`, `pairs`, `offline` and `crash` runs
 * against spawned servers, checking the result line's shape and integrity counters
 * (never timings), plus the lean client's hand-written frames against the
 * project's codec and validator.
 */
import { expect, test } from "bun:test";
import { join, resolve } from "node:path";
import { decodeBody, encodeBody } from "../../src/protocol/codec.ts";
import { validateClient } from "../../src/protocol/stanzas.ts";
import { LeanConn, msgTemplate, scanFrame, Scanned, K_MSG, K_RCPT, K_SENT } from "../../loadtest/lean.ts";

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

test("idle: 50 TCP connections log in; memory per connection is reported", async () => {
  const { code, out, err, result } = await runLoadtest(["idle", "--spawn", "--conns", "50", "--settle", "0"]);
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
  expect(typeof result.server.bytes_per_conn).toBe("number");
  expect(result.server.rss_kb).toBeGreaterThan(0);
  expect(result.lost).toBe(0);
}, 30_000);

test("pairs: 4 pairs, 200 messages, full receipt chain, nothing lost or duplicated", async () => {
  const { code, out, err, result } = await runLoadtest(["pairs", "--spawn", "--pairs", "4", "--messages", "200", "--window", "8"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expectCommonFields(result);
  expect(result.scenario).toBe("pairs");
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
}, 30_000);

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

test("lean client: hand-encoded msg, ack and ping are valid protocol frames", () => {
  const c = new LeanConn("alice", 1, null as any, null as any);
  c.sendMsg(12345, msgTemplate("bob", 1, 8), new Uint8Array(8).fill(7));
  c.ack(7);
  c.ack(4294967303); // above 2^32: written as float64, as PROTOCOL.md §3 allows
  c.ping(3);
  (c as any).encodeAcks();
  const out = (c as any).out as Uint8Array;
  const len = (c as any).outLen as number;
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
  expect([s.kind, s.q, s.id, s.seq, s.dlv]).toEqual([K_RCPT, 12, 7, 42, true]);
  const rr = encodeBody({ t: "rcpt", q: 13, k: "read", u: "bob", d: 1, w: "bob", seq: 42, ts: 1700000000200 });
  scanFrame(rr, 0, rr.length, s);
  expect([s.kind, s.q, s.id, s.dlv]).toEqual([K_RCPT, 13, -1, false]);
});

/**
 * The `presence` load scenario, small: it runs against a spawned server (and a spawned 2-node cluster),
 * prints human lines and one JSON line last, finds no privacy violation,
 * and its frames per change are those of a real fan-out (the numbers
 * themselves are measured, never asserted: performance lives in loadtest/).
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { ROOT } from "../helpers/harness.ts";

test("presence scenario: 40 devices, 3 chats each, 2 s of churn and typing: 0 privacy violations, one JSON line", async () => {
  const p = Bun.spawn([process.execPath, join(ROOT, "loadtest/main.ts"), "presence", "--spawn", "--devices", "40", "--duration", "2", "--seed", "1"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) console.error(out, err);
  expect(code).toBe(0);
  const lines = out.trim().split("\n");
  expect(lines.filter((l) => l.startsWith("{")).length).toBe(1);
  const r = JSON.parse(lines[lines.length - 1]!);
  expect(out).toContain("seed 1");
  expect(r).toMatchObject({ scenario: "presence", privacy_violations: 0, errors: 0, disconnects: 0 });
  expect(r.state_changes_announced).toBeGreaterThan(0);
  expect(r.presence_frames_out).toBeGreaterThan(0);
  expect(r.presence_frames_received).toBeGreaterThan(0);
  expect(r.frames_per_change).toBeGreaterThan(0);
  expect(r.typing_received).toBeGreaterThan(0);
  expect(r.typing_received).toBeLessThanOrEqual(r.typing_sent);
  for (const k of ["cpu_s", "presence_cpu_s", "presence_cpu_share_pct", "rss_kb"]) expect(r.server).toHaveProperty(k);
}, 120_000);

test("presence scenario on 2 nodes (--nodes 2, its own redis-server): 0 privacy violations, change items cross nodes", async () => {
  if (!Bun.which("redis-server")) throw new Error("redis-server is not installed: this test needs the Debian package redis-server");
  const p = Bun.spawn([process.execPath, join(ROOT, "loadtest/main.ts"), "presence", "--spawn", "--nodes", "2", "--devices", "40", "--duration", "2", "--seed", "1"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) console.error(out, err);
  expect(code).toBe(0);
  const lines = out.trim().split("\n");
  const r = JSON.parse(lines[lines.length - 1]!);
  expect(r).toMatchObject({ scenario: "presence", params: { nodes: 2 }, privacy_violations: 0, errors: 0, disconnects: 0 });
  expect(r.state_changes_announced).toBeGreaterThan(0);
  expect(r.presence_frames_received).toBeGreaterThan(0);
  // Every device's chats have their peers on the other node: changes reach watchers only as items over the link.
  expect(r.cross_node_items.v).toBeGreaterThan(0);
  expect(r.cross_node_items_per_change).toBeGreaterThan(0);
  expect(r.typing_received).toBeGreaterThan(0);
  expect(r.server.pid).toHaveLength(2);
  for (const k of ["cpu_s", "presence_cpu_s", "presence_cpu_share_pct", "rss_kb"]) expect(r.server).toHaveProperty(k);
}, 120_000);

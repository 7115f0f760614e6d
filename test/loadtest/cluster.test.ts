/**
 * The load generator's `cluster` scenario, tiny: its own redis-server and 3
 * nodes, two thirds of the pairs across nodes, one kill -9 of a node and one
 * of Redis, each restarted. Checks the result line (the usual fields and the
 * cluster ones) and that nothing acknowledged was lost, duplicated or
 * reordered. Then the open loop (--rate) with a SIGSTOP of a node past its
 * lease. No timing assertions: only counts.
 */
import { expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");

async function runLoadtest(args: string[]): Promise<{ code: number; out: string; err: string; result: any }> {
  const p = Bun.spawn([process.execPath, join(ROOT, "loadtest/main.ts"), ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const last = out.trim().split("\n").pop() ?? "";
  let result: any = null;
  try {
    result = JSON.parse(last);
  } catch {}
  return { code, out, err, result };
}

test("cluster: 3 nodes, 2/3 of the pairs crossing, a node and Redis killed with -9 and restarted: nothing acknowledged lost", async () => {
  if (!Bun.which("redis-server")) throw new Error("redis-server is not installed: apt-get install redis-server (the Debian package redis-server)");
  const { code, out, err, result } = await runLoadtest(["cluster", "--spawn", "--nodes", "3", "--pairs", "6", "--window", "4", "--duration", "4", "--kills", "1", "--redis-kill"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  for (const k of ["scenario", "params", "sent", "acked", "delivered", "lost", "duplicates", "out_of_order", "seq_reused", "sent_per_s", "delivered_per_s", "latency_ms", "server", "msgs_per_server_cpu_s",
    "nodes", "cross_node_share", "redirects", "kills", "refused_retry", "reroutable_p99_ms", "redis_ops_per_msg"]) expect(result).toHaveProperty(k);
  expect(result.scenario).toBe("cluster");
  expect(result.nodes).toBe(3);
  expect(result.cross_node_share).toBeCloseTo(4 / 6, 3);
  expect(result.kills).toBe(1);
  expect(result.acked).toBeGreaterThan(0);
  expect(result.lost).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.seq_reused).toBe(0);
  expect(result.delivered).toBe(result.acked);
  // Every device logged in through n1: the ones homed on n2 and n3 were redirected.
  expect(result.redirects).toBeGreaterThan(0);
  expect(result.reroutable_p99_ms).toBeGreaterThan(0);
  expect(result.redis_ops).toBeGreaterThan(0);
  expect(out).toContain("redis-server killed with -9");
}, 120_000);

test("cluster --rate: an open loop over 2 nodes with one SIGSTOP of a node past its lease: nothing acknowledged lost, duplicated or reordered", async () => {
  if (!Bun.which("redis-server")) throw new Error("redis-server is not installed: apt-get install redis-server (the Debian package redis-server)");
  const { code, out, err, result } = await runLoadtest(["cluster", "--spawn", "--nodes", "2", "--pairs", "4", "--rate", "200", "--duration", "4", "--stops", "1", "--lease-ttl", "1500"]);
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expect(result.params.rate).toBe(200);
  expect(result.params.window).toBe(null);
  expect(result.params.stop_ms).toBe(3000); // twice the lease TTL by default
  expect(result.stops).toBe(1);
  expect(result.latency_of).toContain("open loop");
  expect(result).toHaveProperty("skipped_by_generator");
  expect(result.acked).toBeGreaterThan(0);
  expect(result.lost).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.out_of_order).toBe(0);
  expect(result.delivered).toBe(result.acked);
  expect(result.reroutable_p99_ms).toBeGreaterThan(0); // its users had a send acknowledged again after SIGCONT
  expect(out).toMatch(/stopped n[12] \(SIGSTOP\) for 3000 ms, then SIGCONT/);
}, 120_000);

test("cluster --server-main: every node is spawned from the tree named (an A/B against another commit), and the link counters are reported", async () => {
  if (!Bun.which("redis-server")) throw new Error("redis-server is not installed: apt-get install redis-server (the Debian package redis-server)");
  // Another tree, standing for a clean export of an older commit: its main notes its pid, then runs this tree's
  // server; its store module is the one the scenario writes the accounts with.
  const other = mkdtempSync(join(tmpdir(), "sb-other-tree-"));
  try {
    const marker = join(other, "spawned");
    mkdirSync(join(other, "src/cli"), { recursive: true });
    mkdirSync(join(other, "src/store"), { recursive: true });
    writeFileSync(join(other, "src/cli/main.ts"), `import { appendFileSync } from "node:fs";\nappendFileSync(${JSON.stringify(marker)}, process.pid + "\\n");\nawait import(${JSON.stringify(join(ROOT, "src/cli/main.ts"))});\n`);
    writeFileSync(join(other, "src/store/accounts.ts"), `export * from ${JSON.stringify(join(ROOT, "src/store/accounts.ts"))};\n`);
    const main = join(other, "src/cli/main.ts");
    const { code, out, err, result } = await runLoadtest(["cluster", "--spawn", "--nodes", "2", "--cross", "1", "--pairs", "2", "--window", "4", "--duration", "2", "--server-main", main]);
    if (code !== 0 || !result) console.error(out, err);
    expect(code).toBe(0);
    expect(result.params.server_main).toBe(main);
    expect(readFileSync(marker, "utf8").trim().split("\n").length).toBe(2); // both nodes, from that tree
    expect(result.acked).toBeGreaterThan(0);
    expect(result.lost).toBe(0);
    expect(result.link_batches_per_msg).toBeGreaterThan(0);
    expect(result.link_items_per_batch).toBeGreaterThanOrEqual(1);
    expect(result).toHaveProperty("link_kept_per_msg");
  } finally {
    rmSync(other, { recursive: true, force: true });
  }
}, 120_000);

test("cluster refuses --target and a crossing share with one node, saying why", async () => {
  const a = await runLoadtest(["cluster", "--target", "127.0.0.1:5222"]);
  expect(a.code).toBe(2);
  expect(a.err).toContain("--spawn");
  const b = await runLoadtest(["cluster", "--spawn", "--nodes", "1", "--cross", "0.5"]);
  expect(b.code).toBe(2);
  expect(b.err).toContain("--cross needs --nodes 2");
});

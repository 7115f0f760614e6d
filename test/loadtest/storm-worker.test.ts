/**
 * The reconnect-storm worker (loadtest/storm-worker.ts) driven over its IPC
 * commands against a spawned server, real sockets: a device whose connection
 * the server ends before the storm is armed is dialed again, as a real
 * client's would be, and comes back after the cut. Before, a worker dialed
 * again only once armed: that device stayed away, was not cut, and the storm
 * waited its whole drain for it (one login missing of thousands).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import type { Cmd, Ev } from "../../loadtest/ipc.ts";
import { LeanConn, keyFromSeed } from "../../loadtest/lean.ts";
import { spawnServer, type SpawnedServer } from "../../loadtest/proc.ts";
import { provision } from "../../loadtest/setup.ts";

const ROOT = resolve(import.meta.dir, "../..");
const dir = mkdtempSync(join(tmpdir(), "sb-storm-worker-"));
let srv: SpawnedServer | undefined;
let worker: Subprocess | undefined;
afterAll(async () => {
  worker?.kill();
  srv?.proc.kill("SIGTERM");
  await srv?.proc.exited;
  rmSync(dir, { recursive: true, force: true });
});

/** The worker's events, each taken once by the first `next` asking for its kind. */
const events: Ev[] = [];
const waiting: { ev: string; resolve: (e: Ev) => void }[] = [];
function receive(m: Ev): void {
  if (m.ev === "fatal") throw new Error(`storm worker: ${m.message}`);
  const i = waiting.findIndex((w) => w.ev === m.ev);
  if (i >= 0) waiting.splice(i, 1)[0]!.resolve(m);
  else events.push(m);
}
function next<E extends Ev["ev"]>(ev: E): Promise<Extract<Ev, { ev: E }>> {
  const i = events.findIndex((m) => m.ev === ev);
  if (i >= 0) return Promise.resolve(events.splice(i, 1)[0] as Extract<Ev, { ev: E }>);
  return new Promise((r) => waiting.push({ ev, resolve: r as (e: Ev) => void }));
}
function call<E extends Ev["ev"]>(c: Cmd, ev: E): Promise<Extract<Ev, { ev: E }>> {
  const p = next(ev);
  worker!.send(c);
  return p;
}
/** Polls the worker's status until `done` holds (events, not durations: the deadline only bounds a broken run). */
async function until(done: (s: Extract<Ev, { ev: "s_status" }>) => boolean, what: string, deadlineMs = 30_000): Promise<Extract<Ev, { ev: "s_status" }>> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const s = await call({ cmd: "s_status" }, "s_status");
    if (done(s)) return s;
    if (Date.now() > end) {
      const nb = await call({ cmd: "s_not_back" }, "s_not_back");
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}; not back: ${nb.not_back.join("; ")}`);
    }
    await Bun.sleep(20);
  }
}

test("a device the server closed before the storm was armed is dialed again and comes back after the cut", async () => {
  const data = join(dir, "data");
  const { identities } = provision(data, ["sw-0", "sw-1", "sw-2", "sw-3"]);
  srv = await spawnServer(data, null, ["--tls-port", "-1"]);
  worker = Bun.spawn([process.execPath, join(ROOT, "loadtest/storm-worker.ts")], { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"], serialization: "json", ipc: (m: Ev) => receive(m) });
  await next("hello");
  const target = { host: "127.0.0.1", port: srv.tcp };
  const [r0, r1, r2, s0] = identities as [(typeof identities)[0], (typeof identities)[0], (typeof identities)[0], (typeof identities)[0]];
  await call({
    cmd: "s_init", target, rs: { batches: [1, 0, 0], window: 4, size: 16 }, resume: { tickets: false, tlsSessions: false },
    devices: [{ id: r0, role: "rcpt" }, { id: r1, role: "rcpt" }, { id: r2, role: "rcpt" }, { id: s0, role: "send" }],
  }, "ready");
  const login = await call({ cmd: "s_login", at: Date.now(), concurrency: 0, backoff: "sdk", timeoutMs: 10_000, giveUpMs: 30_000 }, "s_online");
  expect(login.online).toBe(4);

  // The same device logs in elsewhere: the server ends the worker's connection (replaced), before any s_arm.
  const other = new LeanConn(r0.account, r0.device, keyFromSeed(Buffer.from(r0.seed, "hex")), { onFrame() {}, onClose() {}, onError() {} });
  expect(await other.login(target, 10_000)).toBe(true);
  await until((s) => s.disconnects === 1, "the worker to see its connection replaced");
  // A real client dials again; so must the worker (it takes the device back from `other`, which does not redial).
  await until((s) => s.rcpt_ready === 3, "the replaced device back");
  expect((await call({ cmd: "s_not_back" }, "s_not_back")).not_back).toEqual([]);

  // The storm: every device is cut (by the worker itself) and all three recipients come back, the replaced one too.
  const cutAt = Date.now() + 200;
  await call({ cmd: "s_arm", cutAt, outageEnd: cutAt + 300, terminate: true, backoff: "sdk", timeoutMs: 10_000, giveUpMs: 30_000 }, "marked");
  const st = await until((s) => s.all_back_at > 0, "every recipient back after the cut");
  expect(st.all_back_at).toBeGreaterThanOrEqual(cutAt + 300);
  expect(st.rcpt_ready).toBe(3);
  expect(st.failed).toBe(0);
  expect((await call({ cmd: "s_not_back" }, "s_not_back")).not_back).toEqual([]);
}, 120_000);

/**
 * Admission control: what is turned away, how, and what keeps working.
 * - over limits.max_connections a new connection gets `close try_again` with `ra` as its only frame;
 * - over the login bucket, or the memory (or lag) threshold, a login gets `err try_again` with
 *   `x.retry_ms` and `close try_again` with the same `ra`, before any proof is checked;
 *   established sessions go on;
 * - over limits.send_rate an account's send gets `err rate_limited` with its id and `x.retry_ms`;
 * - the SDK waits for the server's delay and tries again, also with reconnect: false.
 */
import { afterEach, expect, test } from "bun:test";
import { SwitchboardClient } from "../../src/client/client.ts";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, msgFrame, proof, rawLogin } from "./util.ts";

const servers: TestServer[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.cleanup();
});
async function server(args: string[]): Promise<TestServer> {
  const s = await startServer({ args: ["--canary-interval", "0", ...args] });
  servers.push(s);
  return s;
}

const errOf = (c: RawConn, code: string) => c.received.find((f) => f.t === "err" && f.e === code) as { e: string; id?: string; x?: { retry_ms?: number } } | undefined;
const closeOf = (c: RawConn) => c.received.find((f) => f.t === "close") as { r: string; ra?: number } | undefined;

test("connection cap: the connection over it gets close try_again with ra and nothing else; the others go on", async () => {
  const s = await server(["--limits-max-connections", "3", "--admission-retry-after-ms", "1000"]);
  const kept = [await s.raw(), await s.raw(), await s.raw()];
  for (const c of kept) await c.hello();
  const over = await s.raw();
  const cl = await over.expect("close");
  expect(cl.r).toBe("try_again");
  expect(cl.ra).toBeGreaterThanOrEqual(1000);
  expect(cl.ra).toBeLessThan(2000);
  await over.waitClosed();
  expect(over.received.map((f) => f.t)).toEqual(["close"]); // no hello: refused before any work
  for (const c of kept) await barrier(c);
  expect(await s.metric("switchboard_admission_refused_total", '{reason="connections"}')).toBe(1);
  // Room again once one leaves.
  kept[0]!.end();
  await waitFor(async () => (await s.metric("switchboard_connections", '{transport="tcp"}')) === 2, "the server to see the close");
  const again = await s.raw();
  await again.hello();
});

test("login bucket: logins beyond it get err try_again + close try_again with the same jittered ra; sessions already in go on", async () => {
  const s = await server([]);
  const a = await s.newDevice("ada");
  const b = await s.newDevice("bob");
  const c = await s.newDevice("cyd");
  // Same data directory, now with 1 login a second and a burst of 2.
  expect(await s.stop()).toBe(0);
  const started = Date.now(); // the bucket starts full (2) no earlier than this, and refills 1 a second
  await s.restart(["--canary-interval", "0", "--admission-login-rate", "1", "--admission-login-burst", "2", "--admission-retry-after-ms", "1500"]);
  const ra = await rawLogin(s, a);
  const rb = await rawLogin(s, b);
  // Ten logins at once: ada and bob emptied the bucket, so of these at most one per second since the start gets in.
  // (A bound from elapsed time, not a timing assertion: on a slow machine more get in, and the bound says how many may.)
  const tries = await Promise.all(Array.from({ length: 10 }, () => s.raw()));
  const hellos = await Promise.all(tries.map((t) => t.hello()));
  tries.forEach((t, i) => t.send({ t: "auth", u: c.account, d: c.device, sig: proof(c, "auth", hellos[i]!.sid, hellos[i]!.nonce, c.account, c.device) }));
  const outcomes = await Promise.all(tries.map((t) => t.expect((f) => f.t === "ready" || f.t === "close")));
  const refused = tries.filter((_, i) => outcomes[i]!.t === "close");
  const mayHaveRefilled = Math.floor((Date.now() - started) / 1000);
  expect(refused.length).toBeGreaterThanOrEqual(Math.max(1, 10 - mayHaveRefilled));
  for (const t of refused) {
    const e = errOf(t, "try_again");
    const cl = closeOf(t)!;
    expect(cl.r).toBe("try_again");
    expect(e?.x?.retry_ms).toBe(cl.ra!);
    expect(cl.ra).toBeGreaterThanOrEqual(1500);
    expect(cl.ra).toBeLessThan(3000);
  }
  expect(await s.metric("switchboard_logins_total", '{result="try_again"}')).toBe(refused.length);
  expect(await s.metric("switchboard_admission_refused_total", '{reason="login_rate"}')).toBe(refused.length);
  // Established sessions were never asked: ada still sends to bob and gets `sent`.
  ra.send(msgFrame("m1", "bob", [1]));
  await ra.expect((f) => f.t === "sent" && f.id === "m1");
  const m = await rb.expect("msg");
  expect(m.id).toBe("m1");
});

test("memory threshold: every new login (auth and enroll) is refused with try_again before its proof is looked at", async () => {
  const s = await server(["--admission-max-rss-mb", "1"]); // any process is above 1 MiB
  const code = s.addUser("eve");
  const t = await s.raw();
  const h = await t.hello();
  // A garbage signature: a refusal for load must come before the proof is checked (no auth_failed).
  t.send({ t: "enroll", u: "eve", code, pk: new Uint8Array(32).fill(7), sig: new Uint8Array(64) });
  const cl = await t.expect("close");
  expect(cl.r).toBe("try_again");
  expect(errOf(t, "try_again")?.x?.retry_ms).toBe(cl.ra!);
  expect(errOf(t, "auth_failed")).toBeUndefined();
  expect(h.sid.length).toBeGreaterThan(0);
  const t2 = await s.raw();
  await t2.hello();
  t2.send({ t: "auth", u: "eve", d: 1, sig: new Uint8Array(64) });
  expect((await t2.expect("close")).r).toBe("try_again");
  expect(await s.metric("switchboard_admission_refused_total", '{reason="memory"}')).toBe(2);
  expect(await s.metric("switchboard_logins_total", '{result="bad_proof"}')).toBe(0);
});

test("per-account send rate: sends beyond the bucket get err rate_limited with their id and retry_ms; nothing of them is delivered", async () => {
  const s = await server(["--limits-send-rate", "1", "--limits-send-burst", "3"]);
  const a = await rawLogin(s, await s.newDevice("ann"));
  const b = await rawLogin(s, await s.newDevice("ben"));
  for (let i = 0; i < 10; i++) a.send(msgFrame(`r${i}`, "ben", [1]));
  await barrier(a);
  const sent = () => a.received.filter((f) => f.t === "sent").map((f) => (f as { id: string }).id);
  const limited = a.received.filter((f) => f.t === "err" && f.e === "rate_limited") as { id?: string; x?: { retry_ms?: number } }[];
  await waitFor(() => sent().length + limited.length === 10, "an answer to each send");
  expect(sent().length).toBeGreaterThanOrEqual(3);
  expect(limited.length).toBeGreaterThanOrEqual(1);
  for (const l of limited) {
    expect(l.id).toMatch(/^r\d$/);
    expect(l.x?.retry_ms).toBeGreaterThan(0);
  }
  await barrier(a); // the connection stays
  await barrier(b);
  const got = b.received.filter((f) => f.t === "msg").map((f) => (f as { id: string }).id);
  expect(new Set(got)).toEqual(new Set(sent()));
  expect(await s.metric("switchboard_admission_refused_total", '{reason="send_rate"}')).toBe(limited.length);
});

test("SDK: a connection turned away at the cap is retried after the server's ra, also with reconnect: false", async () => {
  const s = await server(["--limits-max-connections", "1", "--admission-retry-after-ms", "1000"]);
  const kf = await s.newDevice("dora");
  const hog = await s.raw(); // takes the only place
  await hog.hello();
  const seen: { closes: string[]; delays: number[] } = { closes: [], delays: [] };
  const connecting = s.client(kf, {
    reconnect: false,
    setup: (c) => {
      c.on("close", (x) => seen.closes.push(x.reason));
      c.on("reconnecting", (x) => seen.delays.push(x.delayMs));
    },
  });
  await waitFor(() => seen.closes.length > 0, "the first attempt to be turned away");
  expect(seen.closes[0]).toBe("try_again");
  expect(seen.delays[0]).toBeGreaterThanOrEqual(1000); // at least the server's ra, which is at least the base
  hog.end(); // room now: the retry gets in
  const client = await connecting;
  expect(client.isReady).toBe(true);
  await client.close();
});

test("SDK: a login refused with try_again is retried after the delay, not given up", async () => {
  const s = await server([]);
  const kf = await s.newDevice("fay");
  expect(await s.stop()).toBe(0);
  await s.restart(["--canary-interval", "0", "--admission-max-rss-mb", "1", "--admission-retry-after-ms", "2000"]);
  const seen: { closes: string[]; delays: number[] } = { closes: [], delays: [] };
  let failed: Error | null = null;
  const c = new SwitchboardClient({ host: "127.0.0.1", port: s.tcp, key: kf, reconnect: false });
  c.on("close", (x) => seen.closes.push(x.reason));
  c.on("reconnecting", (x) => seen.delays.push(x.delayMs));
  c.connect().catch((e) => (failed = e));
  await waitFor(() => seen.delays.length >= 1, "a retry to be scheduled");
  expect(seen.closes[0]).toBe("try_again");
  expect(seen.delays[0]).toBeGreaterThanOrEqual(2000);
  expect(failed).toBeNull();
  await c.close();
});

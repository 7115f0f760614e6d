/**
 * Timers over real sockets: idle reaping (READY and LINK_WAIT), the auth
 * timeout, link expiry, and the SDK's heartbeat and reconnect when its
 * server dies (kill -9) or freezes (SIGSTOP). Waits are bounded generously;
 * nothing asserts that something happened fast.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateDeviceKey } from "../../src/client/keys.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { collect, dec, expectClosedWith, freePort, proof, rawLogin } from "./util.ts";

/** it = 3 s, pi = 1 s, auth timeout 2 s, link requests lapse after 10 s (the minimum). */
let srv: TestServer;
/** Fixed TCP port, so that SDK clients find it again after a restart. */
let srvH: TestServer;
let portH = 0;

beforeAll(async () => {
  portH = await freePort();
  [srv, srvH] = await Promise.all([
    startServer({ args: ["--timeouts-idle", "3", "--timeouts-ping-interval", "1", "--timeouts-sweep", "1", "--timeouts-auth", "2", "--timeouts-link", "10"] }),
    startServer({ args: ["--tcp-port", String(portH), "--timeouts-idle", "3", "--timeouts-ping-interval", "1"] }),
  ]);
});
afterAll(() => {
  srv?.cleanup();
  srvH?.cleanup();
});

describe("server timers", () => {
  test("a silent logged-in connection is reaped with idle_timeout; a pinging SDK client over the same time is not", async () => {
    const kr = await srv.newDevice("quiet");
    const ks = await srv.newDevice("chatty");
    const idleBefore = await srv.metric("switchboard_closes_total", '{reason="idle_timeout"}');
    const sdk = await srv.client(ks, { tlsTransport: true });
    const cs = collect(sdk);
    expect(sdk.hello).toMatchObject({ pi: 1, it: 3 });
    const raw = await rawLogin(srv, kr);
    expect(raw.serverHello).toMatchObject({ pi: 1, it: 3 });
    await expectClosedWith(raw, "idle_timeout");
    // Two more idle periods, for good measure: the SDK keeps its session.
    const raw2 = await rawLogin(srv, kr, "tls");
    await expectClosedWith(raw2, "idle_timeout");
    expect(await srv.metric("switchboard_closes_total", '{reason="idle_timeout"}')).toBe(idleBefore + 2);
    expect(cs.closes).toEqual([]);
    expect(cs.readies).toBe(0); // the listener was attached after the one `ready`; no reconnect since
    expect(sdk.isReady).toBe(true);
    const s = await sdk.send("quiet", "still here");
    expect(s.seq).toBeGreaterThan(0);
    await sdk.close();
  }, 30_000);

  test("never before the limit: idle after more than `it` s of silence, auth after more than the auth timeout", async () => {
    // A lower bound only (slowness can only make the close later): the server must not reap early.
    // Several connections at different phases of the 1 s sweep.
    const silences = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
      const kf = await srv.newDevice(`phase${i}`);
      const c = await rawLogin(srv, kf);
      await Bun.sleep(i * 170);
      const t0 = Date.now();
      c.send({ t: "ping", n: i }); // the last frame the server gets from this connection
      await c.expect("pong");
      await expectClosedWith(c, "idle_timeout");
      return Date.now() - t0;
    }));
    for (const s of silences) expect(s).toBeGreaterThanOrEqual(3000);
    const waits = await Promise.all(Array.from({ length: 4 }, async (_, i) => {
      await Bun.sleep(i * 230);
      const t0 = Date.now();
      const c = await srv.raw();
      await expectClosedWith(c, "auth_timeout");
      return Date.now() - t0;
    }));
    for (const w of waits) expect(w).toBeGreaterThanOrEqual(2000);
  }, 30_000);

  test("a link request that stays silent is reaped too (LINK_WAIT has the idle timeout, not the auth timeout)", async () => {
    await srv.newDevice("lw");
    const key = generateDeviceKey();
    const c = await srv.raw();
    const h = await c.hello();
    c.send({ t: "link", u: "lw", pk: key.publicKey, sig: proof(key, "link", h.sid, h.nonce, "lw", 0) });
    await c.expect("linkcode");
    await expectClosedWith(c, "idle_timeout");
  }, 30_000);

  test("a connection that does not log in is closed with auth_timeout, pings or not", async () => {
    const c1 = await srv.raw();
    await c1.hello();
    const c2 = await srv.raw("tls");
    await c2.hello();
    const pinger = setInterval(() => c2.send({ t: "ping" }), 300);
    try {
      await expectClosedWith(c1, "auth_timeout");
      await expectClosedWith(c2, "auth_timeout");
    } finally {
      clearInterval(pinger);
    }
    const c3 = await srv.raw(); // not even a hello
    await expectClosedWith(c3, "auth_timeout");
  }, 30_000);

  test("a link request not approved in time: err link_expired, close auth_timeout", async () => {
    await srv.newDevice("lx");
    const key = generateDeviceKey();
    const c = await srv.raw();
    const h = await c.hello();
    c.send({ t: "link", u: "lx", pk: key.publicKey, sig: proof(key, "link", h.sid, h.nonce, "lx", 0) });
    const lc = await c.expect("linkcode");
    const pinger = setInterval(() => c.send({ t: "ping" }), 500); // stay clear of the idle timeout
    try {
      const e = await c.expect("err", 25_000);
      expect(e.e).toBe("link_expired");
      await expectClosedWith(c, "auth_timeout");
    } finally {
      clearInterval(pinger);
    }
    expect(Date.now()).toBeGreaterThanOrEqual(lc.exp - 1000); // never before its announced expiry (1 s of clock slack)
    // The lapsed code cannot be approved any more.
    const approver = await srv.client(await srv.newDevice("lx"));
    await expect(approver.request("link.approve", { code: lc.code })).rejects.toMatchObject({ code: "not_found" });
    await approver.close();
  }, 40_000);
});

describe("SDK heartbeat and reconnect", () => {
  test("kill -9: the SDK reports a close it will recover from, reconnects by itself and sends what was queued meanwhile", async () => {
    const ka = await srvH.newDevice("ann");
    const kb = await srvH.newDevice("ben");
    const ann = await srvH.client(ka);
    const ben = await srvH.client(kb);
    const [ca, cb] = [collect(ann), collect(ben)];
    await ben.send("ann", "before");
    await waitFor(() => ca.messages.length === 1, "the first message");

    await srvH.kill9();
    await waitFor(() => cb.closes.length > 0 && ca.closes.length > 0, "both clients to notice");
    expect(cb.closes[0]!.willReconnect).toBe(true);
    expect(ca.closes[0]!.willReconnect).toBe(true);
    // Sent while the server is down: kept by the SDK until it can go out.
    const pending = ben.send("ann", "while away");
    await srvH.restart();
    expect(srvH.tcp).toBe(portH);
    const sent = await pending;
    await waitFor(() => ca.messages.length === 2, "the message sent while away");
    expect(ca.messages.map((m) => dec(m.payload))).toEqual(["before", "while away"]);
    expect(ca.messages[1]!.seq).toBe(sent.seq);
    expect(ca.readies).toBeGreaterThanOrEqual(1);
    expect(cb.readies).toBeGreaterThanOrEqual(1);
    await ann.close();
    await ben.close();
  }, 60_000);

  test("a graceful stop (SIGTERM): close server_shutdown with ra; the SDK comes back after the restart", async () => {
    const ke = await srvH.newDevice("eve");
    const kf = await srvH.newDevice("fay");
    const eve = await srvH.client(ke);
    const ce = collect(eve);
    const delays: number[] = [];
    eve.on("reconnecting", (r) => delays.push(r.delayMs));
    const raw = await rawLogin(srvH, kf);
    expect(await srvH.stop()).toBe(0);
    const cl = await expectClosedWith(raw, "server_shutdown");
    expect(cl.ra).toBeGreaterThanOrEqual(1000);
    expect(cl.ra).toBeLessThanOrEqual(5000);
    await waitFor(() => ce.closes.length > 0, "eve to see the close");
    expect(ce.closes[0]).toMatchObject({ reason: "server_shutdown", willReconnect: true });
    await srvH.restart();
    await waitFor(() => ce.readies >= 1, "eve to reconnect", 30_000);
    // The SDK waited at least half the `ra` the server asked for (its jitter is [ra/2, ra]) before the first retry.
    expect(delays[0]!).toBeGreaterThanOrEqual(500);
    const s = await eve.send("fay", "after the restart");
    const fay = await rawLogin(srvH, kf);
    expect(((await fay.expect("msg")) as { id: string }).id).toBe(s.id);
    fay.end();
    await eve.close();
  }, 60_000);

  test("a frozen server (SIGSTOP): missed pongs make the SDK drop the connection; it comes back after SIGCONT", async () => {
    const kc = await srvH.newDevice("cy");
    const kd = await srvH.newDevice("di");
    const cy = await srvH.client(kc);
    const di = await srvH.client(kd);
    const [cc, cd] = [collect(cy), collect(di)];
    srvH.proc.kill("SIGSTOP");
    try {
      // The socket stays open (the kernel still holds it); only the missing pongs can tell.
      await waitFor(() => cc.closes.length > 0, "the heartbeat to give up", 20_000);
      expect(cc.closes[0]).toMatchObject({ willReconnect: true });
      expect(cc.closes[0]!.reason).not.toBe("idle_timeout"); // the client's own verdict, not the server's
    } finally {
      srvH.proc.kill("SIGCONT");
    }
    await waitFor(() => cc.readies >= 1 && cy.isReady, "cy to come back");
    await waitFor(() => di.isReady, "di to be ready");
    const s = await cy.send("di", "after the freeze");
    await waitFor(() => cd.messages.some((m) => m.id === s.id), "the message after the freeze");
    await cy.close();
    await di.close();
  }, 60_000);
});

test("the SDK gives up on a server that accepts the connection but never says hello", async () => {
  const { SwitchboardClient } = await import("../../src/client/client.ts");
  const { generateDeviceKey, keyToFile } = await import("../../src/client/keys.ts");
  let accepted = 0;
  const mute = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: () => void accepted++, data: () => {} } });
  try {
    const c = new SwitchboardClient({ host: "127.0.0.1", port: mute.port, key: keyToFile(generateDeviceKey(), "nobody", 1), reconnect: false, helloTimeoutMs: 300 });
    await expect(c.connect()).rejects.toThrow(/no hello/);
    expect(accepted).toBe(1);
  } finally {
    mute.stop(true);
  }
});

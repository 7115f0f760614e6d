/**
 * Interop with coturn (Debian package coturn): its test client
 * turnutils_uclient allocates and relays through `switchboard relay` with
 * TURN REST credentials from the shared secret, and a real coturn started
 * here from systemd/coturn.conf accepts the credentials Switchboard issues
 * (uclient and the SDK's own TURN client against it).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { callControl } from "../../src/client/calls.ts";
import { TurnClient } from "../../src/client/turn.ts";
import { startServer } from "../helpers/harness.ts";
import { issueTurnCredentials } from "../../src/protocol/turn-rest.ts";
import { requireCoturn, startRelay, uclient, type RelayProcess } from "./relay-process.ts";

const SECRET = "interop-secret";
let relay: RelayProcess;

beforeAll(async () => {
  requireCoturn();
  relay = await startRelay(SECRET);
});
afterAll(() => relay?.proc.kill());

describe("coturn interop", () => {
  test("turnutils_uclient -W (REST secret) -y -n 50 relays through switchboard relay, nothing lost", async () => {
    const r = await uclient(["-W", SECRET, "-u", "alice/1", "-y", "-n", "50", "-p", String(relay.udp), "127.0.0.1"]);
    // 2 clients x (RTP + RTCP) x 50 messages.
    expect({ sent: r.sent, received: r.received, lost: r.lost }, r.output).toEqual({ sent: 200, received: 200, lost: 0 });
    expect(await relay.metric('switchboard_relay_packets_total{dir="out"}')).toBeGreaterThanOrEqual(200);
  });

  test("turnutils_uclient -u/-w with credentials Switchboard issued, through switchboard relay", async () => {
    const c = issueTurnCredentials(SECRET, "bob/1", Date.now() / 1000, 600);
    const r = await uclient(["-u", c.username, "-w", c.password, "-y", "-c", "-n", "20", "-p", String(relay.udp), "127.0.0.1"]);
    expect({ sent: r.sent, received: r.received, lost: r.lost }, r.output).toEqual({ sent: 40, received: 40, lost: 0 });
  });

  describe("a real coturn with use-auth-secret", () => {
    const COTURN_SECRET = "coturn-shared-secret";
    const base = 20000 + Math.floor(Math.random() * 400) * 20; // printed on failure below
    const dir = mkdtempSync(join(tmpdir(), "sb-coturn-"));
    let proc: ReturnType<typeof Bun.spawn> | null = null;
    let log = "";

    beforeAll(async () => {
      proc = Bun.spawn([
        // The shipped configuration (systemd/coturn.conf), with this test's secret and ports on the command line.
        "turnserver", "-c", join(import.meta.dir, "../../systemd/coturn.conf"), "--use-auth-secret", `--static-auth-secret=${COTURN_SECRET}`, "--realm=switchboard",
        "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", `--listening-port=${base}`, `--alt-listening-port=${base + 1}`,
        `--min-port=${base + 2}`, `--max-port=${base + 19}`, "--no-cli", "--no-tls", "--no-dtls", "--allow-loopback-peers",
        "--log-file=stdout", `--pidfile=${join(dir, "pid")}`, `--db=${join(dir, "turndb")}`,
      ], { stdout: "pipe", stderr: "pipe" });
      void new Response(proc.stdout as ReadableStream).text().then((t) => (log += t));
      // Ready when it answers an Allocate (with the challenge, then our credentials).
      for (let i = 0; i < 100; i++) {
        const c = issueTurnCredentials(COTURN_SECRET, "probe/1", Date.now() / 1000, 60);
        const r = await TurnClient.allocate({ host: "127.0.0.1", port: base, username: c.username, password: c.password, rto: 100 });
        if (r.ok) {
          await r.client.close();
          return;
        }
        if (proc.exitCode !== null) break;
      }
      throw new Error(`coturn did not come up on udp ${base} (ports chosen at random; rerun if taken): ${log}`);
    });
    afterAll(() => {
      proc?.kill();
      rmSync(dir, { recursive: true, force: true });
    });

    test("uclient with credentials a running Switchboard server issued (iq calls.turn) relays through coturn", async () => {
      const srv = await startServer({ args: ["--calls-secret", COTURN_SECRET, "--calls-turn-urls", `turn:127.0.0.1:${base}?transport=udp`] });
      let c: { username: string; password: string; urls: string[] };
      try {
        const client = await srv.client(await srv.newDevice("alice"));
        c = await callControl(client).turn();
        await client.close();
      } finally {
        srv.cleanup();
      }
      expect(c.urls).toEqual([`turn:127.0.0.1:${base}?transport=udp`]);
      const r = await uclient(["-u", c.username, "-w", c.password, "-y", "-n", "50", "-p", String(base), "127.0.0.1"]);
      expect({ sent: r.sent, received: r.received, lost: r.lost }, `coturn on ${base}\n${r.output}`).toEqual({ sent: 200, received: 200, lost: 0 });
    });

    test("the SDK's TURN client relays through coturn; wrong or expired credentials are refused", async () => {
      const mk = (secret: string, dev: string, from = Date.now() / 1000, ttl = 600) => issueTurnCredentials(secret, dev, from, ttl);
      const a = mk(COTURN_SECRET, "carol/1");
      const b = mk(COTURN_SECRET, "dave/1");
      const ra = await TurnClient.allocate({ host: "127.0.0.1", port: base, username: a.username, password: a.password });
      const rb = await TurnClient.allocate({ host: "127.0.0.1", port: base, username: b.username, password: b.password });
      if (!ra.ok || !rb.ok) throw new Error(`coturn on ${base} refused: ${JSON.stringify([ra, rb])}`);
      const A = ra.client;
      const B = rb.client;
      expect((await A.channelBind(B.relayed)).ok).toBe(true);
      expect((await B.createPermission(A.relayed)).ok).toBe(true);
      const got = new Promise<string>((r) => (B.onData = (d) => r(Buffer.from(d).toString())));
      A.send(B.relayed, new TextEncoder().encode("through coturn"));
      expect(await got).toBe("through coturn");
      await A.close();
      await B.close();
      const wrong = mk("other-secret", "eve/1");
      const w = await TurnClient.allocate({ host: "127.0.0.1", port: base, username: wrong.username, password: wrong.password });
      expect(!w.ok && w.code).toBe(401);
      const old = mk(COTURN_SECRET, "eve/1", Date.now() / 1000 - 120, 60);
      const o = await TurnClient.allocate({ host: "127.0.0.1", port: base, username: old.username, password: old.password });
      expect(!o.ok && o.code).toBe(401);
    });
  });
});

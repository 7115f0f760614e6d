/**
 * `switchboard relay` as a process, driven by the SDK's TURN client
 * (src/client/turn.ts) over real UDP sockets: allocation with the server's
 * credentials, permissions, channels, relayed echo both ways, the caps, the
 * per-device quota, rotation, and revocation by the signed control message.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSocket } from "node:dgram";
import { TurnClient } from "../../src/client/turn.ts";
import { issueTurnCredentials } from "../../src/protocol/turn-rest.ts";
import { CONTROL_SIGNATURE_HEADER, signControl } from "../../src/transport/relay/auth.ts";
import { startRelay, type RelayProcess } from "./relay-process.ts";

const SECRET = "relay-test-secret";
const OLD = "relay-test-old-secret";
let relay: RelayProcess;

beforeAll(async () => {
  relay = await startRelay(`${SECRET},${OLD}`, ["--relay-per-device", "2", "--relay-pps", "200"]);
});
afterAll(() => relay?.proc.kill());

const now = () => Date.now() / 1000;
async function alloc(device: string, secret = SECRET, ttl = 600) {
  const c = issueTurnCredentials(secret, device, now(), ttl);
  return TurnClient.allocate({ host: "127.0.0.1", port: relay.udp, username: c.username, password: c.password });
}
async function must(device: string, secret = SECRET) {
  const r = await alloc(device, secret);
  if (!r.ok) throw new Error(`allocate ${device}: ${r.code} ${r.reason}`);
  return r.client;
}
/** A plain UDP peer (the far side of a relayed flow), collecting what it gets. */
async function peer() {
  const s = createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", r));
  const got: { data: Buffer; port: number }[] = [];
  const waiters: (() => void)[] = [];
  s.on("message", (data, rinfo) => {
    got.push({ data, port: rinfo.port });
    for (const w of waiters.splice(0)) w();
  });
  const until = async (n: number) => { while (got.length < n) await new Promise<void>((r) => waiters.push(r)); };
  return { s, port: s.address().port, got, until };
}
const revoke = (device: string) => {
  const body = JSON.stringify({ device, ts: Date.now() });
  return fetch(`${relay.url}/revoke`, { method: "POST", body, headers: { [CONTROL_SIGNATURE_HEADER]: signControl(SECRET, body) } });
};

describe("switchboard relay", () => {
  test("allocate, permission, Send indication out, Data indication back, then ChannelData both ways", async () => {
    const a = await must("alice/1");
    expect(a.relayed.address).toBe("127.0.0.1");
    expect(a.lifetime).toBeGreaterThan(0);
    const p = await peer();
    // Without a permission the relay drops what the peer sends and what the client sends.
    a.send({ address: "127.0.0.1", port: p.port }, new Uint8Array([9]));
    expect((await a.createPermission({ address: "127.0.0.1" })).ok).toBe(true);
    a.send({ address: "127.0.0.1", port: p.port }, new TextEncoder().encode("hello"));
    await p.until(1);
    expect(p.got[0]!.data.toString()).toBe("hello");
    expect(p.got[0]!.port).toBe(a.relayed.port);
    const back = new Promise<string>((r) => (a.onData = (d, from) => r(`${Buffer.from(d)}@${from.port}`)));
    p.s.send("world", a.relayed.port, "127.0.0.1");
    expect(await back).toBe(`world@${p.port}`);
    const bound = await a.channelBind({ address: "127.0.0.1", port: p.port });
    expect(bound.ok && bound.channel).toBe(0x4000);
    a.send({ address: "127.0.0.1", port: p.port }, new TextEncoder().encode("over channel"));
    await p.until(2);
    expect(p.got[1]!.data.toString()).toBe("over channel");
    const back2 = new Promise<string>((r) => (a.onData = (d) => r(Buffer.from(d).toString())));
    p.s.send("channel back", a.relayed.port, "127.0.0.1");
    expect(await back2).toBe("channel back");
    await a.close();
    p.s.close();
  });

  test("credentials: the second (old) secret is accepted, a wrong or expired one is not", async () => {
    const old = await must("bob/1", OLD);
    await old.close();
    const wrong = await alloc("bob/1", "not-the-secret");
    expect(wrong.ok).toBe(false);
    expect(!wrong.ok && wrong.code).toBe(401);
    const c = issueTurnCredentials(SECRET, "bob/1", now() - 120, 60); // expired a minute ago
    const expired = await TurnClient.allocate({ host: "127.0.0.1", port: relay.udp, username: c.username, password: c.password });
    expect(!expired.ok && expired.code).toBe(401);
  });

  test("the lifetime never passes the credentials' expiry", async () => {
    const c = issueTurnCredentials(SECRET, "carol/1", now(), 90);
    const r = await TurnClient.allocate({ host: "127.0.0.1", port: relay.udp, username: c.username, password: c.password, lifetime: 3600 });
    if (!r.ok) throw new Error(r.reason);
    expect(r.client.lifetime).toBeLessThanOrEqual(90);
    expect(r.client.lifetime).toBeGreaterThan(80);
    await r.client.close();
  });

  test("per-device quota: a third allocation of one device gets 486", async () => {
    const x = await must("dave/1");
    const y = await must("dave/1");
    const z = await alloc("dave/1");
    expect(!z.ok && z.code).toBe(486);
    expect(await relay.metric('switchboard_relay_refused_total{code="486"}')).toBe(1);
    await x.close();
    await y.close();
  });

  test("pps cap: a burst beyond relay.pps is dropped and counted", async () => {
    const a = await must("erin/1");
    const m = await must("erin-marker/1");
    const p = await peer();
    await a.channelBind({ address: "127.0.0.1", port: p.port });
    await m.channelBind({ address: "127.0.0.1", port: p.port });
    const before = await relay.metric("switchboard_relay_dropped_total");
    // 20 rounds of 100: after each, a marker through another allocation; once it is relayed, the
    // relay has handled the round (loopback keeps the order), and no socket buffer overflows.
    const N = 2000;
    for (let round = 0; round < N / 100; round++) {
      for (let i = 0; i < 100; i++) a.send({ address: "127.0.0.1", port: p.port }, new Uint8Array([i]));
      m.send({ address: "127.0.0.1", port: p.port }, new TextEncoder().encode(`marker${round}`));
      while (!p.got.some((g) => g.data.toString() === `marker${round}`)) await Bun.sleep(2);
    }
    const dropped = (await relay.metric("switchboard_relay_dropped_total")) - before;
    const passed = p.got.filter((g) => g.port === a.relayed.port).length;
    expect(passed + dropped).toBe(N);
    expect(passed).toBeGreaterThanOrEqual(200); // one second of burst at least
    expect(passed).toBeLessThan(N); // all 2000 at 200 pps would take 9 s more than the burst
    await a.close();
    await m.close();
    p.s.close();
  });

  test("revocation: the signed control message ends the device's flows at once and refuses it new ones", async () => {
    const a = await must("frank/2");
    const other = await must("grace/1");
    const p = await peer();
    await a.channelBind({ address: "127.0.0.1", port: p.port });
    await other.channelBind({ address: "127.0.0.1", port: p.port });
    a.send({ address: "127.0.0.1", port: p.port }, new TextEncoder().encode("before"));
    await p.until(1);
    // A bad signature changes nothing.
    const forged = await fetch(`${relay.url}/revoke`, { method: "POST", body: JSON.stringify({ device: "frank/2", ts: Date.now() }), headers: { [CONTROL_SIGNATURE_HEADER]: "00" } });
    expect(forged.status).toBe(403);
    const r = await revoke("frank/2");
    expect(await r.json()).toEqual({ ended: 1 });
    a.send({ address: "127.0.0.1", port: p.port }, new TextEncoder().encode("after"));
    other.send({ address: "127.0.0.1", port: p.port }, new TextEncoder().encode("marker"));
    while (!p.got.some((g) => g.data.toString() === "marker")) await Bun.sleep(20);
    expect(p.got.map((g) => g.data.toString())).toEqual(["before", "marker"]);
    const again = await alloc("frank/2");
    expect(!again.ok && again.code).toBe(403);
    expect(await relay.metric("switchboard_relay_revoked_total")).toBe(1);
    await other.close();
    p.s.close();
  });

  test("/load reports allocations and pps", async () => {
    const load = (await (await fetch(`${relay.url}/load`)).json()) as Record<string, unknown>;
    expect(load).toMatchObject({ max_allocations: 10000, shed: false });
    expect(typeof load.allocations).toBe("number");
    expect(typeof load.lag_ms).toBe("number");
  });
});

describe("relay overload", () => {
  test("at 100 % load (pps over relay.capacity_pps) new allocations get 508; the existing one keeps relaying", async () => {
    const small = await startRelay(SECRET, ["--relay-capacity-pps", "20"]);
    try {
      const mk = async (device: string) => {
        const c = issueTurnCredentials(SECRET, device, now(), 600);
        return TurnClient.allocate({ host: "127.0.0.1", port: small.udp, username: c.username, password: c.password });
      };
      const r = await mk("busy/1");
      if (!r.ok) throw new Error(r.reason);
      const a = r.client;
      const p = await peer();
      await a.channelBind({ address: "127.0.0.1", port: p.port });
      // Traffic at several hundred pps for as long as the test runs: over the capacity (20) by far, even on a
      // machine slow enough to stretch each 2 ms sleep tenfold.
      let on = true;
      const pump = (async () => {
        while (on) {
          for (let i = 0; i < 4; i++) a.send({ address: "127.0.0.1", port: p.port }, new Uint8Array([1]));
          await Bun.sleep(2);
        }
      })();
      await waitLoad(small.url, 100);
      const refused = await mk("newcomer/1");
      expect(!refused.ok && refused.code).toBe(508);
      const before = p.got.length;
      while (p.got.length <= before) await Bun.sleep(10); // the established flow goes on
      on = false;
      await pump;
      await a.close();
      p.s.close();
    } finally {
      small.proc.kill();
    }
  });
});

async function waitLoad(url: string, pct: number): Promise<void> {
  for (;;) {
    const l = (await (await fetch(`${url}/load`)).json()) as { load: number };
    if (l.load >= pct) return;
    await Bun.sleep(100);
  }
}

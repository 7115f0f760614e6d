/**
 * Call signaling through a real server (src/modules/calls): ringing on every
 * device and the stop when one answers, the missed-call notice (durable,
 * across a restart), the offer for a device that connects while it rings,
 * the ring timeout, TURN credentials that the relay accepts, revocation
 * reaching the relay, shedding in its order, and the proof that nothing of a
 * call's payloads is stored.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { callControl } from "../../src/client/calls.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { TurnClient } from "../../src/client/turn.ts";
import type { CallSignal } from "../../src/client/types.ts";
import { issueTurnCredentials } from "../../src/protocol/turn-rest.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { startRelay, type RelayProcess } from "./relay-process.ts";

const SECRET = "signaling-secret";
let srv: TestServer;
let relay: RelayProcess;
const clients: SwitchboardClient[] = [];
/** Every payload sent in a call signal: none may be found on the server's disk. */
const payloads: Buffer[] = [];

beforeAll(async () => {
  relay = await startRelay(SECRET, ["--relay-max-allocations", "10"]);
  srv = await startServer({ args: ["--calls-secret", SECRET, "--calls-relay-control", relay.url, "--calls-turn-urls", `turn:127.0.0.1:${relay.udp}?transport=udp`, "--calls-ring-ttl", "5"] });
});
afterAll(async () => {
  for (const c of clients) c.close();
  srv?.cleanup();
  relay?.proc.kill();
});

function marker(): Uint8Array {
  const b = randomBytes(40);
  payloads.push(b);
  return new Uint8Array(b);
}

/** A connected client that records its call signals and missed calls. */
async function online(kf: Parameters<TestServer["client"]>[0]) {
  const signals: CallSignal[] = [];
  const missed: { from: string; id: string }[] = [];
  const c = await srv.client(kf, {
    setup: (c) => {
      c.on("call", (s) => signals.push(s));
      c.on("missedCall", (m) => missed.push(m));
    },
  });
  clients.push(c);
  return { c, device: kf.device, calls: callControl(c), signals, missed };
}
type Online = Awaited<ReturnType<typeof online>>;
const sig = (o: Online, kind: string, id: string) => o.signals.find((s) => s.kind === kind && s.id === id);
const until = (o: Online, kind: string, id: string) => waitFor(() => sig(o, kind, id) !== undefined, `${kind} of ${id}`).then(() => sig(o, kind, id)!);

describe("call signaling", () => {
  test("an offer rings all three devices; one answers, the other two stop; later signals go to that device only", async () => {
    const alice = await online(await srv.newDevice("alice"));
    const bobKeys = [await srv.newDevice("bob"), await srv.newDevice("bob"), await srv.newDevice("bob")];
    const bob = await Promise.all(bobKeys.map((k) => online(k)));
    const sent = new Map<number, Uint8Array>();
    const id = await alice.calls.call("bob", (d) => {
      const m = marker();
      sent.set(d, m);
      return m;
    });
    const offers = await Promise.all(bob.map((b) => until(b, "offer", id)));
    offers.forEach((o, i) => {
      expect(o.from).toBe("alice");
      expect(o.payload).toEqual(sent.get(bobKeys[i]!.device)!); // each device its own payload
    });
    const answerPayload = marker();
    expect(bob[1]!.calls.answer(offers[1]!, answerPayload)).toBe(true);
    const answer = await until(alice, "answer", id);
    expect(answer.fromDevice).toBe(bobKeys[1]!.device);
    expect(answer.payload).toEqual(answerPayload);
    for (const i of [0, 2]) expect((await until(bob[i]!, "stop", id)).why).toBe("answered");
    expect(sig(bob[1]!, "stop", id)).toBeUndefined();
    // A second answer is refused: the call no longer rings.
    const refused = new Promise<string>((r) => bob[0]!.c.on("error", (e) => r(e.code)));
    bob[0]!.calls.answer(offers[0]!);
    expect(await refused).toBe("unknown_call");
    // ICE and hangup after the answer: to the answering device only.
    alice.calls.ice("bob", id, bobKeys[1]!.device, marker());
    await until(bob[1]!, "ice", id);
    bob[1]!.calls.hangup("alice", id, alice.device, marker());
    await until(alice, "hangup", id);
    expect(sig(bob[0]!, "ice", id) ?? sig(bob[2]!, "ice", id)).toBeUndefined();
    // A ring that was answered is no missed call.
    expect(bob.flatMap((b) => b.missed)).toEqual([]);
  });

  test("an offline callee: a ring push is tried, and the hung-up call is a queued missed-call notice, also after a restart", async () => {
    const dave = await online(await srv.newDevice("dave"));
    const carolKey = await srv.newDevice("carol");
    const id = await dave.calls.call("carol", () => marker());
    await waitFor(async () => (await srv.http_get("/metrics")).text.includes("switchboard_call_ring_pushes_total"), "a ring push tried");
    expect(dave.calls.hangup("carol", id)).toBe(true);
    await waitFor(async () => (await srv.metric("switchboard_calls_missed_total")) >= 1, "missed notice queued");
    await Bun.sleep(50); // past a group commit (queue.commit_ms 5) before the stop
    for (const c of clients.splice(0)) c.close();
    await srv.stop();
    await srv.restart();
    const carol = await online(carolKey);
    await waitFor(() => carol.missed.length > 0, "the missed-call notice");
    expect(carol.missed[0]).toMatchObject({ from: "dave", id });
    expect(carol.signals).toEqual([]); // the ring ended before carol came: no offer
  });

  test("a device that connects while the call rings gets the offer then; unanswered, the ring times out", async () => {
    const erin = await online(await srv.newDevice("erin"));
    const frankOn = await online(await srv.newDevice("frank"));
    const frankOffKey = await srv.newDevice("frank");
    const id = await erin.calls.call("frank", () => marker());
    await until(frankOn, "offer", id);
    const late = await online(frankOffKey);
    expect((await until(late, "offer", id)).from).toBe("erin");
    // calls.ring_ttl is 5 s here: the caller gets stop/timeout, each callee device stop/timeout and a missed call.
    expect((await until(erin, "stop", id)).why).toBe("timeout");
    expect((await until(frankOn, "stop", id)).why).toBe("timeout");
    await waitFor(() => frankOn.missed.length > 0 && late.missed.length > 0, "missed notices on both devices");
  }, 30_000);

  test("iq calls.turn: credentials for this device that the relay accepts; revoking the device ends its allocation", async () => {
    const gKey = await srv.newDevice("grace");
    const g2Key = await srv.newDevice("grace");
    const g = await online(gKey);
    const g2 = await online(g2Key);
    const t = await g2.calls.turn();
    expect(t.username.endsWith(`:grace/${g2Key.device}`)).toBe(true);
    expect(t.urls).toEqual([`turn:127.0.0.1:${relay.udp}?transport=udp`]);
    const r = await TurnClient.allocate({ host: "127.0.0.1", port: relay.udp, username: t.username, password: t.password });
    if (!r.ok) throw new Error(`relay refused server credentials: ${r.code} ${r.reason}`);
    const before = await relay.metric("switchboard_relay_revoked_total");
    await g.c.request("device.revoke", { d: g2Key.device });
    await waitFor(async () => (await relay.metric("switchboard_relay_revoked_total")) === before + 1, "the relay ended the revoked device's allocation");
    expect((await r.client.refresh(600)).ok).toBe(false); // gone on the relay
  });

  test("shedding: group calls refused first, then 1:1 calls; a call in progress goes on; every refusal counted", async () => {
    const hal = await online(await srv.newDevice("hal"));
    const ivy = await online(await srv.newDevice("ivy"));
    // A call established before the pressure.
    const live = await hal.calls.call("ivy", () => marker());
    ivy.calls.answer(await until(ivy, "offer", live));
    await until(hal, "answer", live);
    const held: TurnClient[] = [];
    const hold = async (n: number) => {
      while (held.length < n) {
        const c = issueTurnCredentials(SECRET, `load/${held.length}`, Date.now() / 1000, 600);
        const r = await TurnClient.allocate({ host: "127.0.0.1", port: relay.udp, username: c.username, password: c.password });
        if (!r.ok) throw new Error(`${r.code} ${r.reason}`);
        held.push(r.client);
      }
    };
    const errors: { code: string; scope?: string }[] = [];
    hal.c.on("error", (e) => errors.push({ code: e.code, scope: (e.detail as { scope?: string } | undefined)?.scope }));
    const loadIs = (p: number) => waitFor(async () => (await srv.metric("switchboard_calls_load_percent")) >= p, `load ${p} %`);
    await hold(8); // 80 % of relay.max_allocations 10: calls.shed_group_at
    await loadIs(80);
    await hal.calls.call("ivy", () => marker(), { group: "#team" });
    const direct = await hal.calls.call("ivy", () => marker());
    await until(ivy, "offer", direct);
    await waitFor(() => errors.length === 1, "the group offer refused");
    expect(errors[0]).toEqual({ code: "overloaded", scope: "group" });
    hal.calls.hangup("ivy", direct);
    await hold(10); // 100 %: past calls.shed_direct_at 95
    await loadIs(100);
    const refusedDirect = await hal.calls.call("ivy", () => marker());
    await waitFor(() => errors.length === 2, "the 1:1 offer refused");
    expect(errors[1]).toEqual({ code: "overloaded", scope: "direct" });
    expect(sig(ivy, "offer", refusedDirect)).toBeUndefined();
    // The established call still carries its signals.
    hal.calls.ice("ivy", live, ivy.device, marker());
    await until(ivy, "ice", live);
    expect(await srv.metric("switchboard_calls_shed_total", '{scope="group"}')).toBe(1);
    expect(await srv.metric("switchboard_calls_shed_total", '{scope="direct"}')).toBe(1);
    for (const c of held) await c.close();
  });

  test("signals are rate limited per account (calls.signal_rate): the excess refused, counted, nothing else lost", async () => {
    const liz = await online(await srv.newDevice("liz"));
    const max = await online(await srv.newDevice("max"));
    const limited: string[] = [];
    liz.c.on("error", (e) => e.code === "rate_limited" && limited.push(e.code));
    const N = 300; // the bucket holds 100 (2 x 50/s): all 300 would take 4 s of refill; they go out at once
    for (let i = 0; i < N; i++) liz.calls.ice("max", `spam${i}`, max.device, marker());
    await waitFor(() => limited.length + max.signals.length === N, "every signal relayed or refused");
    expect(limited.length).toBeGreaterThan(0);
    expect(max.signals.length).toBeGreaterThanOrEqual(100);
  });

  test("capture proof: no call payload is in any file of the data directory (a plaintext message control is)", async () => {
    const jo = await online(await srv.newDevice("jo"));
    await srv.newDevice("kim"); // offline: the control message waits on disk
    const control = randomBytes(40);
    await jo.c.send("kim", new Uint8Array(control));
    await Bun.sleep(50); // past a group commit
    const files: string[] = [];
    const walk = (d: string) => {
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        if (statSync(p).isDirectory()) walk(p);
        else files.push(p);
      }
    };
    walk(srv.dataDir);
    const disk = Buffer.concat(files.map((f) => readFileSync(f)));
    expect(disk.includes(control)).toBe(true); // the scan can find what is stored
    expect(payloads.length).toBeGreaterThan(10);
    for (const p of payloads) expect(disk.includes(p)).toBe(false);
  });
});

/**
 * SIGTERM: the server stops accepting, commits what is buffered, tells every
 * client to come back after its own jittered delay (`close server_shutdown`
 * with `ra`), and exits 0. Nothing it acknowledged with `sent` is lost: every
 * such message is delivered after a restart.
 */
import { afterEach, expect, test } from "bun:test";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { collect, msgFrame, rawLogin } from "./util.ts";

let srv: TestServer | null = null;
afterEach(() => {
  srv?.cleanup();
  srv = null;
});

// Over WS too: the `close` stanza goes out before the WebSocket close (1001), and Bun.serve's stop leaves open sockets for it.
for (const transport of ["tcp", "ws"] as const) test(`SIGTERM under load: every \`sent\` message arrives after a restart, clients get close with ra, exit 0 (${transport})`, async () => {
  srv = await startServer({ args: ["--shutdown-reconnect-spread", "3"] });
  const s = srv;
  const rcv1 = await s.newDevice("rcv");
  const rcv2 = await s.newDevice("rcv"); // stays offline until after the restart
  const online = await s.client(rcv1, { reconnect: false, transport });
  const seenOnline = collect(online);
  const senders: { raw: RawConn; name: string; next: number }[] = [];
  for (let i = 0; i < 4; i++) {
    const kf = await s.newDevice(`snd${i}`);
    senders.push({ raw: await rawLogin(s, kf, transport), name: `snd${i}`, next: 0 });
  }
  const WINDOW = 8;
  const sentIds = (x: { raw: RawConn }) => x.raw.received.filter((f) => f.t === "sent").map((f) => (f as { id: string }).id);
  const closed = () => senders.every((x) => x.raw.received.some((f) => f.t === "close") || x.raw.closed);
  // Closed loop: each sender keeps WINDOW messages without `sent` in flight until its connection is closed.
  let pumping = true;
  const pump = (async () => {
    while (pumping && !closed()) {
      for (const x of senders) {
        if (x.raw.closed || x.raw.received.some((f) => f.t === "close")) continue;
        const done = sentIds(x).length;
        while (x.next < done + WINDOW) x.raw.send(msgFrame(`${x.name}-${x.next++}`, "rcv", [1, 2]));
      }
      await Bun.sleep(2);
    }
  })();
  await waitFor(() => senders.reduce((n, x) => n + sentIds(x).length, 0) >= 400, "400 messages sent under load", 60_000);
  s.proc.kill("SIGTERM");
  expect(await s.proc.exited).toBe(0);
  pumping = false;
  await pump;

  // Every sender was told to come back later, each after its own delay in [1 s, 3 s].
  for (const x of senders) {
    const cl = x.raw.received.find((f) => f.t === "close") as { r: string; ra?: number } | undefined;
    expect(cl?.r).toBe("server_shutdown");
    expect(cl?.ra).toBeGreaterThanOrEqual(1000);
    expect(cl?.ra).toBeLessThanOrEqual(3000);
  }
  const acknowledged = senders.flatMap(sentIds);
  const attempted = senders.reduce((n, x) => n + x.next, 0);
  expect(acknowledged.length).toBeGreaterThanOrEqual(400);

  // After a restart, the offline device gets every message that was acknowledged (and the online one
  // has each of them, before the shutdown or after).
  await s.restart();
  let seenLate!: ReturnType<typeof collect>;
  let seenAgain!: ReturnType<typeof collect>;
  // Handlers attached before the login: what is queued is delivered right after `ready`.
  const late = await s.client(rcv2, { reconnect: false, transport, setup: (c) => void (seenLate = collect(c)) });
  const again = await s.client(rcv1, { reconnect: false, transport, setup: (c) => void (seenAgain = collect(c)) });
  const want = new Set(acknowledged);
  const has = (c: ReturnType<typeof collect>[], id: string) => c.some((x) => x.messages.some((m) => m.id === id));
  await waitFor(() => [...want].every((id) => has([seenLate], id) && has([seenOnline, seenAgain], id)), "every acknowledged message on both devices", 60_000);
  // Nothing came twice to one device. And the drain committed before it closed: every message the
  // server accepted got its `sent` before the close frame, so nothing arrives that its sender was not told of.
  const lateIds = seenLate.messages.map((m) => m.id);
  expect(new Set(lateIds).size).toBe(lateIds.length);
  expect(lateIds.length).toBeLessThanOrEqual(attempted);
  expect(lateIds.filter((id) => !want.has(id))).toEqual([]);
  await late.close();
  await again.close();
}, 180_000);

test("shutdown.drain_delay: after SIGTERM /readyz answers 503 draining while clients are still served, then they get close with ra", async () => {
  srv = await startServer({ args: ["--canary-interval", "0", "--shutdown-drain-delay", "3", "--shutdown-timeout", "20"] });
  const s = srv;
  expect((await s.http_get("/readyz")).status).toBe(200);
  const kf = await s.newDevice("stay");
  const c = await rawLogin(s, kf);
  s.proc.kill("SIGTERM");
  let seen: { status: number; body: { reason?: string } } | null = null;
  await waitFor(async () => {
    const r = await s.http_get("/readyz");
    seen = { status: r.status, body: JSON.parse(r.text) };
    return r.status === 503;
  }, "/readyz to turn 503 after SIGTERM");
  expect(seen!.body.reason).toBe("draining");
  // Still served while the load balancer catches up (unless the delay is over already, then it is closed).
  c.send({ t: "ping", n: 77 });
  const answer = await c.expect((f) => (f.t === "pong" && f.n === 77) || f.t === "close");
  if (answer.t === "pong") expect(c.received.some((f) => f.t === "close")).toBe(false);
  const cl = (await c.expect("close")) as { r: string; ra?: number };
  expect(cl.r).toBe("server_shutdown");
  expect(cl.ra).toBeGreaterThanOrEqual(1000);
  expect(await s.proc.exited).toBe(0);
}, 60_000);

/**
 * /readyz and its end-to-end canary (src/ops/canary.ts): two internal devices
 * send each other a message through the server's own TCP listener every
 * canary.interval seconds. Delivery is stopped for real by taking over the
 * canary's receiving device with a raw connection that never acknowledges:
 * the canary's messages are queued and pushed to it, and no `dlv` comes back.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readKeyFile } from "../../src/client/keys.ts";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { msgs } from "./util.ts";

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer({ args: ["--canary-interval", "1", "--canary-threshold", "3"] });
});
afterAll(() => srv?.cleanup());

async function readyz(): Promise<{ status: number; body: { ready: boolean; reason?: string; canary?: Record<string, unknown> } }> {
  const r = await srv.http_get("/readyz");
  return { status: r.status, body: JSON.parse(r.text) };
}

test("/readyz turns 200 after a round trip through the whole server; the canary's metrics say so", async () => {
  const first = await readyz();
  // Right after start it may or may not have completed its first round; never anything but these two.
  expect(first.status === 200 || first.body.reason === "not_started").toBe(true);
  // Asserted on the reading that satisfied the wait: a later one is another moment of a canary that runs every second.
  let r = first;
  await waitFor(async () => (r = await readyz()).status === 200, "the first canary round trip", 30_000);
  expect(r.body.ready).toBe(true);
  expect(r.body.canary?.connected).toBe(true);
  expect(await srv.metric("switchboard_canary_rounds_total", '{result="ok"}')).toBeGreaterThanOrEqual(1);
  expect(await srv.metric("switchboard_canary_rtt_seconds_count")).toBeGreaterThanOrEqual(1);
  // Its logins and sessions are not users': left out of those metrics.
  expect(await srv.metric("switchboard_sessions")).toBe(0);
  expect(await srv.metric("switchboard_logins_total", '{result="ok"}')).toBe(0);
});

test("/readyz turns 503 when delivery to the canary's recipient stops, and 200 again when it resumes", async () => {
  await waitFor(async () => (await readyz()).status === 200, "readiness", 30_000);
  const okBefore = await srv.metric("switchboard_canary_rounds_total", '{result="ok"}');
  const b = readKeyFile(join(srv.dataDir, "canary", "b.key"));
  expect(b.account).toBe("switchboard.canary-b");
  // Hold the recipient device and never ack. The canary takes its device back after a backoff
  // (2 x threshold, doubling); whenever it does, take it again, until the server reports not ready.
  const held: RawConn[] = [];
  const take = async () => {
    const c = await srv.raw();
    await c.login(b);
    held.push(c);
  };
  await take();
  let r = await readyz();
  const deadline = Date.now() + 90_000;
  while (r.status === 200) {
    if (Date.now() > deadline) throw new Error("still ready 90 s after delivery stopped");
    if (held[held.length - 1]!.closed) await take();
    await Bun.sleep(100);
    r = await readyz();
  }
  expect(r.status).toBe(503);
  expect(r.body.ready).toBe(false);
  expect(["lagging", "failed"]).toContain(r.body.reason!);
  // Delivery reached the recipient's connection and stopped there: the canary's messages were pushed, not acknowledged.
  expect(held.flatMap((c) => msgs(c, (m) => m.from === "switchboard.canary-a")).length).toBeGreaterThanOrEqual(1);
  expect(await srv.metric("switchboard_canary_age_seconds")).toBeGreaterThan(3);

  // Resume: let go of the device. The canary dials it again, gets what waited, acks, and A gets its receipts.
  for (const c of held) c.end();
  await waitFor(async () => (await readyz()).status === 200, "readiness after delivery resumed", 120_000);
  expect(await srv.metric("switchboard_canary_rounds_total", '{result="ok"}')).toBeGreaterThan(okBefore);
}, 240_000);

test("/readyz without a canary: 200 while serving, with canary off", async () => {
  const s = await startServer({ args: ["--canary-interval", "0"] });
  try {
    const r = await s.http_get("/readyz");
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({ ready: true, canary: "off" });
  } finally {
    s.cleanup();
  }
});

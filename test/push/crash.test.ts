/**
 * kill -9 with 500 push jobs pending: every one is sent exactly once after
 * the restart. The gateway is down (its port refuses connections) until the
 * server has been killed, so nothing can have reached it before; afterwards
 * it counts every request and every idempotency key.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { pushCalls } from "../../src/client/push.ts";
import { refusedPort } from "./fakes.ts";
import { startGateway, webhookArgs, type Gateway } from "./gateway.ts";

const DEVICES = 500;
let srv: TestServer | undefined;
let gw: Gateway | undefined;
afterAll(async () => {
  srv?.cleanup();
  await gw?.close();
});

test(`kill -9 with ${DEVICES} push jobs pending: each is sent exactly once after the restart`, async () => {
  const port = await refusedPort();
  srv = await startServer({ args: webhookArgs(`http://127.0.0.1:${port}/hook`, { "escalate-after": 3600 }) });
  const s = srv;
  const names = Array.from({ length: DEVICES }, (_, i) => `u${i}`);
  for (let i = 0; i < DEVICES; i += 50) {
    await Promise.all(names.slice(i, i + 50).map(async (name) => {
      const c = await s.client(await s.newDevice(name));
      await pushCalls(c).register({ p: "webhook", token: `tok-${name}` });
      await c.close();
    }));
  }
  const alice = await s.client(await s.newDevice("alice"));
  await Promise.all(names.map((name) => alice.send(name, `hello ${name}`))); // every `sent`: items and jobs committed
  await alice.close();
  expect(await s.metric("switchboard_push_jobs_open")).toBe(DEVICES);
  await s.kill9();

  gw = await startGateway(port);
  await s.restart();
  await waitFor(() => gw!.bodies.length >= DEVICES, `${DEVICES} pushes after the restart`, 60_000);
  await waitFor(async () => (await s.metric("switchboard_push_in_flight")) === 0, "no push in flight");
  // Every job moved past its silent stage (the visible one is an hour away): nothing more can go out.
  expect(await s.metric("switchboard_push_total", '{provider="webhook",stage="silent",result="delivered"}')).toBe(DEVICES);
  expect(gw.bodies).toHaveLength(DEVICES);
  expect(new Set(gw.bodies.map((b) => b.id)).size).toBe(DEVICES);
  expect(new Set(gw.bodies.map((b) => b.token))).toEqual(new Set(names.map((n) => `tok-${n}`)));
  expect(gw.badSignatures).toBe(0);
}, 180_000);

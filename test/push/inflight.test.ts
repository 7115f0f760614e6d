/**
 * At-least-once with one key per job stage, and no head of line. Real
 * server processes, real local gateways.
 * - kill -9 while every push is in flight (the gateway has read each request
 *   and not answered): after the restart every job is sent again once its
 *   lease runs out and delivered, and every request for a device, before
 *   and after the kill, carries the same key (body `id` and the
 *   idempotency-key header), so a gateway that dedupes delivers each once.
 * - in-flight jobs never fill the batch a tick reads (push.batch 4 here):
 *   with ten webhook pushes hanging, a Web Push device queued after them is
 *   still pushed.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { pushCalls } from "../../src/client/push.ts";
import { generateVapidKeys } from "../../src/core/push/webpush.ts";
import { WEBHOOK_IDEMPOTENCY } from "../../src/core/push/webhook.ts";
import { startHanging, startHttp, subscriber, type FakeServer } from "./fakes.ts";
import { offlineWebhookDevice, webhookArgs } from "./gateway.ts";

const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const f of cleanup) await f();
});

/** Registers `n` webhook devices `<prefix>i` with token `t-<prefix>i`, each then offline. */
async function devices(s: TestServer, prefix: string, n: number): Promise<string[]> {
  const names = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  await Promise.all(names.map((name) => offlineWebhookDevice(s, name, `t-${name}`)));
  return names;
}

test("kill -9 with every push in flight: each job is sent again after the restart, delivered, and always under one key", async () => {
  const N = 40;
  let answering = false;
  const gw: FakeServer = await startHttp(() => (answering ? { status: 204 } : new Promise(() => {}))); // holds until the kill
  cleanup.push(() => gw.close());
  const srv = await startServer({ args: webhookArgs(gw.url + "/hook", { "escalate-after": 3600, "timeout-ms": 8000, concurrency: 64 }) });
  cleanup.push(() => srv.cleanup());
  const names = await devices(srv, "k", N);
  const a = await srv.client(await srv.newDevice("alice"));
  await Promise.all(names.map((n) => a.send(n, `hi ${n}`)));
  await a.close();
  await waitFor(() => gw.requests.length >= N, `${N} requests held at the gateway`);
  expect(await srv.metric("switchboard_push_in_flight")).toBe(N);
  await srv.kill9();
  const beforeKill = gw.requests.length; // N, or more if a request timed out (8 s) and went again: the same key
  answering = true;
  await srv.restart(); // same flags; the leases (2 x timeout, written before each request left) run out, then each job goes again
  const delivered = () => srv.metric("switchboard_push_total", '{provider="webhook",stage="silent",result="delivered"}').catch(() => 0); // absent until the first
  await waitFor(async () => (await delivered()) === N, `${N} delivered`, 150_000);
  expect(await srv.metric("switchboard_push_in_flight")).toBe(0);
  const byToken = new Map<string, Set<string>>();
  for (const r of gw.requests) {
    const body = JSON.parse(r.body.toString()) as { id: string; token: string };
    expect(r.headers[WEBHOOK_IDEMPOTENCY]).toBe(body.id);
    byToken.set(body.token, (byToken.get(body.token) ?? new Set()).add(body.id));
  }
  expect([...byToken.keys()].sort()).toEqual(names.map((n) => `t-${n}`).sort());
  for (const ids of byToken.values()) expect(ids.size).toBe(1); // a duplicate is the same request, by key
  // Each job went again after the kill (its lease ran out in the file): the requests since cover every device.
  expect(new Set(gw.requests.slice(beforeKill).map((r) => JSON.parse(r.body.toString()).token)).size).toBe(N);
}, 180_000);

test("in-flight jobs never fill a tick's batch: with 10 pushes hanging and push.batch 4, a later device is still pushed", async () => {
  const hang = await startHanging();
  cleanup.push(() => hang.close());
  const wp = await startHttp(() => ({ status: 201 }));
  cleanup.push(() => wp.close());
  const vapid = generateVapidKeys();
  const ua = subscriber();
  const srv = await startServer({
    args: [
      ...webhookArgs(`http://127.0.0.1:${hang.port}/hook`, { "escalate-after": 3600, "timeout-ms": 60_000, batch: 4 }),
      "--push-webpush-vapid-public", vapid.publicKey, "--push-webpush-vapid-private", vapid.privateKey,
      "--push-webpush-subject", "mailto:ops@example.org", "--push-webpush-allow-insecure", "true",
    ],
  });
  cleanup.push(() => srv.cleanup());
  const names = await devices(srv, "h", 10);
  const a = await srv.client(await srv.newDevice("alice"));
  await Promise.all(names.map((n) => a.send(n, "wake")));
  await waitFor(async () => (await srv.metric("switchboard_push_in_flight")) === 10, "all ten hanging, four a tick");
  const c = await srv.client(await srv.newDevice("web"));
  await pushCalls(c).register({ p: "webpush", endpoint: `${wp.url}/sub/1`, p256dh: ua.p256dh, auth: ua.auth });
  await c.close();
  await a.send("web", "wake too");
  await waitFor(() => wp.requests.length === 1, "the Web Push device's push");
  expect(await srv.metric("switchboard_push_in_flight")).toBe(10); // the hanging ones are still out
  await a.close();
}, 120_000);

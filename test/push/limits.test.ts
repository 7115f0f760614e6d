/**
 * Per-device push limits survive a restart: a device pushed once (silent),
 * then kill -9 and a restart, then a login and a new message: the new job
 * is held back by push.silent_interval (before, the limits lived in memory
 * only, and the restart let that second push through). Real server
 * process, real webhook gateway.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { offlineWebhookDevice, startGateway, webhookArgs, type Gateway } from "./gateway.ts";
import { startHttp, type FakeServer, type Reply } from "./fakes.ts";

let srv: TestServer | undefined;
let gw: Gateway | undefined;
let flaky: FakeServer | undefined;
let srv2: TestServer | undefined;
afterAll(async () => {
  srv?.cleanup();
  srv2?.cleanup();
  await gw?.close();
  await flaky?.close();
});

/** This process's silent pushes that came to `result` (0 before the first: the series exists only once counted). */
const silent = (s: TestServer, result: string) => s.metric("switchboard_push_total", `{provider="webhook",stage="silent",result="${result}"}`).catch(() => 0);
const limited = (s: TestServer) => silent(s, "rate-limited");

test("a silent push held back by push.silent_interval stays held back across kill -9 and a restart", async () => {
  gw = await startGateway();
  srv = await startServer({ args: webhookArgs(gw.fake.url + "/hook", { "escalate-after": 3600, "silent-interval": 3600 }) });
  const s = srv;
  const kb = await offlineWebhookDevice(s, "bob", "bob-phone");
  const alice = await s.client(await s.newDevice("alice"));
  await alice.send("bob", "one");
  await waitFor(() => gw!.bodies.length === 1, "the first silent push");
  await waitFor(async () => (await s.metric("switchboard_push_in_flight")) === 0, "no push in flight");
  await s.kill9();
  await s.restart();
  // bob logs in (his job closes) and goes away again; a new message opens a new job, due at once: the restored limit
  // holds it back (a server that forgot its limits would push bob a second time within push.silent_interval).
  let got = 0;
  const back = await s.client(kb, { setup: (x) => x.on("message", () => void got++) });
  await waitFor(() => got === 1, "bob's message");
  await waitFor(async () => (await s.metric("switchboard_push_jobs_open")) === 0, "the job closed by the login");
  await back.close();
  await alice.close();
  const again = await s.client(await s.newDevice("alice"));
  await again.send("bob", "two");
  await waitFor(async () => (await limited(s)) >= 1, "the new job held back by the limit");
  expect(await s.metric("switchboard_push_jobs_open")).toBe(1);
  expect(gw.bodies).toHaveLength(1);
  await again.close();
}, 60_000);

test("a stage its gateway failed (503 three times, then retry-later) goes again without waiting out push.silent_interval", async () => {
  let calls = 0;
  // The fourth answer is held until the test lets it go: the gateway counts a request before the server has its
  // answer, so "four requests seen" never means "delivered counted" (under load the server was that far behind,
  // and a read of the delivered series before its first count found none and failed the test).
  let release!: () => void;
  const fourth = new Promise<Reply>((r) => (release = () => r({ status: 204 })));
  flaky = await startHttp(() => (++calls <= 3 ? { status: 503 } : calls === 4 ? fourth : { status: 204 }));
  srv2 = await startServer({ args: webhookArgs(flaky.url + "/hook", { "escalate-after": 3600, "silent-interval": 3600 }) });
  const s = srv2;
  await offlineWebhookDevice(s, "carl", "carl-phone");
  const a = await s.client(await s.newDevice("ann"));
  await a.send("carl", "hi");
  // Three attempts in memory (1 s, 2 s apart), handed back as retry-later, read again from the file: the fourth is
  // the same stage, charged once, so the silent limit (an hour) does not hold it.
  await waitFor(() => calls >= 4, "the fourth attempt", 30_000);
  expect(await silent(s, "delivered")).toBe(0); // its answer is still held
  release();
  await waitFor(async () => (await silent(s, "delivered")) === 1, "delivered");
  expect(await silent(s, "retry-later")).toBe(1);
  expect(new Set(flaky.requests.map((r) => JSON.parse(r.body.toString()).id)).size).toBe(1); // one key for every attempt
  await a.close();
}, 60_000);

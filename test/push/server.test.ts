/**
 * Push end to end: a real server process with the webhook provider pointed
 * at a local gateway (test/push/gateway.ts), SDK clients over real sockets.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { pushCalls } from "../../src/client/push.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { startGateway, webhookArgs, type Gateway } from "./gateway.ts";

let srv: TestServer;
let gw: Gateway;
let alice: SwitchboardClient;

beforeAll(async () => {
  gw = await startGateway();
  // A 2 s escalation: the silent push, then the visible one, both inside the 10 s of the test.
  srv = await startServer({ args: webhookArgs(gw.fake.url + "/hook", { "escalate-after": 2 }) });
  alice = await srv.client(await srv.newDevice("alice"));
});
afterAll(async () => {
  await alice?.close();
  srv?.cleanup();
  await gw?.close();
});

/** A device that registers `token` with the webhook provider and goes offline. */
async function offlineDevice(account: string, token: string): Promise<KeyFile> {
  const kf = await srv.newDevice(account);
  const c = await srv.client(kf);
  expect(await pushCalls(c).register({ p: "webhook", token })).toMatchObject({ p: "webhook" });
  await c.close();
  return kf;
}

async function sendMany(to: string, n: number, text: (i: number) => string): Promise<void> {
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) sends.push(alice.send(to, text(i)));
  await Promise.all(sends);
}

describe("push registration", () => {
  test("register, read back, replace, remove; bad input refused with bad_field, an unconfigured provider with push_unavailable", async () => {
    const c = await srv.client(await srv.newDevice("reg"));
    const p = pushCalls(c);
    expect(await p.info()).toEqual({ e: null, providers: ["webhook"] });
    const first = await p.register({ p: "webhook", token: "one" });
    expect((await p.info()).e).toEqual({ p: "webhook", token: "one" });
    const second = await p.register({ p: "webhook", token: "two" });
    expect(second.at).toBeGreaterThan(first.at);
    expect((await p.info()).e).toEqual({ p: "webhook", token: "two" });
    for (const [bad, what] of [
      [{ p: "carrier-pigeon" }, "push.set.p"],
      [{ p: "webhook" }, "push.set.token is required"],
      [{ p: "webhook", token: "has space" }, "push.set.token must match"],
      [{ p: "webpush", endpoint: "not a url", p256dh: "x", auth: "y" }, "absolute URL"],
    ] as const) {
      await expect(c.request("push.set", bad)).rejects.toMatchObject({ code: "bad_field", message: expect.stringContaining(what) });
    }
    await expect(p.register({ p: "apns", token: "ab".repeat(32) })).rejects.toMatchObject({ code: "push_unavailable" });
    expect((await p.info()).e).toEqual({ p: "webhook", token: "two" }); // the refusals changed nothing
    expect(await p.unregister()).toEqual({ removed: true });
    expect(await p.unregister()).toEqual({ removed: false });
    expect((await p.info()).e).toBeNull();
    await c.close();
  });
});

describe("who gets pushed", () => {
  test("1 000 messages to one offline device: a silent push, then one visible push, and nothing more", async () => {
    await offlineDevice("bob", "bob-phone");
    await sendMany("bob", 1000, (i) => `secret text ${i}`);
    await waitFor(() => gw.to("bob-phone").length >= 2, "the silent and the visible push");
    // The job is now past its last stage: more messages collapse into it and wake nothing.
    await sendMany("bob", 100, (i) => `more ${i}`);
    await waitFor(async () => (await srv.metric("switchboard_push_in_flight")) === 0, "no push in flight");
    const got = gw.to("bob-phone");
    expect(got.map((b) => b.urgency)).toEqual(["silent", "alert"]);
    expect(got[0]!.id).not.toBe(got[1]!.id); // one idempotency key per stage
    expect(got[1]!.count).toBeGreaterThanOrEqual(1000);
    expect(await srv.metric("switchboard_push_total", '{provider="webhook",stage="silent",result="delivered"}')).toBeGreaterThanOrEqual(1);
  });

  test("an online device that acknowledges everything gets no push", async () => {
    const kf = await srv.newDevice("carol");
    const jobsBefore = await srv.metric("switchboard_push_jobs_open");
    const carol = await srv.client(kf);
    await pushCalls(carol).register({ p: "webhook", token: "carol-phone" });
    let received = 0;
    carol.on("message", () => received++);
    await sendMany("carol", 300, (i) => `hi ${i}`);
    await waitFor(() => received === 300, "carol has every message");
    await carol.close(); // nothing pending: the lost connection opens no job
    expect(await srv.metric("switchboard_push_jobs_open")).toBe(jobsBefore); // no job was ever written for her
    expect(gw.to("carol-phone")).toEqual([]);
  });

  test("a login closes the device's job; going away again with messages pending opens a new one, held back by the silent-push limit", async () => {
    const kf = await offlineDevice("dave", "dave-phone");
    await sendMany("dave", 5, (i) => `d${i}`);
    await waitFor(() => gw.to("dave-phone").length >= 1, "dave's silent push");
    const dave = await srv.client(kf, { autoAck: false });
    await waitFor(async () => (await srv.metric("switchboard_push_reconnect_seconds_count")) >= 1, "push-to-reconnect recorded");
    const jobs = await srv.metric("switchboard_push_jobs_open");
    const limited = '{provider="webhook",stage="silent",result="rate-limited"}';
    const before = await srv.metric("switchboard_push_total", limited).catch(() => 0);
    await dave.close(); // five items still unacknowledged: a new job
    await waitFor(async () => (await srv.metric("switchboard_push_total", limited).catch(() => 0)) > before, "the second silent push refused by the per-device limit");
    expect(await srv.metric("switchboard_push_jobs_open")).toBe(jobs + 1);
    expect(gw.to("dave-phone")).toHaveLength(1); // push.silent_interval (20 min) has not passed
  });

  test("receipts never push: not from a commit, and not when a connection goes away with only receipts unacknowledged", async () => {
    const frankKf = await srv.newDevice("frank");
    const ginaKf = await srv.newDevice("gina");
    const jobs = await srv.metric("switchboard_push_jobs_open");
    let frank = await srv.client(frankKf);
    await pushCalls(frank).register({ p: "webhook", token: "frank-phone" });
    await frank.send("gina", "hello gina"); // gina is offline and has no endpoint: no job
    await frank.close(); // nothing queued for frank: no job
    let got = 0;
    const gina = await srv.client(ginaKf, { setup: (c) => c.on("message", () => got++) });
    await waitFor(() => got === 1, "gina has the message (and acknowledged it: a dlv receipt queued to frank, offline)");
    await gina.close();
    const receipts: string[] = [];
    frank = await srv.client(frankKf, { autoAck: false, setup: (c) => c.on("receipt", (r) => receipts.push(r.kind)) });
    await waitFor(() => receipts.includes("dlv"), "frank's queue held the dlv receipt");
    const sessions = await srv.metric("switchboard_sessions");
    await frank.close(); // what frank leaves queued: the receipt, unacknowledged
    await waitFor(async () => (await srv.metric("switchboard_sessions")) === sessions - 1, "the server saw frank go");
    await waitFor(async () => (await srv.metric("switchboard_push_in_flight")) === 0, "no push in flight");
    expect(await srv.metric("switchboard_push_jobs_open")).toBe(jobs);
    expect(gw.to("frank-phone")).toEqual([]);
  });
});

describe("dead endpoints", () => {
  test("an endpoint the gateway calls gone (410) is removed and costs no further attempts", async () => {
    gw.dead.add("erin-old");
    const kf = await offlineDevice("erin", "erin-old");
    await sendMany("erin", 3, (i) => `e${i}`);
    await waitFor(async () => (await srv.metric("switchboard_push_endpoints_removed_total")) === 1, "the endpoint removed");
    expect(gw.to("erin-old")).toHaveLength(1);
    const c = await srv.client(kf, { autoAck: false });
    expect((await pushCalls(c).info()).e).toBeNull();
    await c.close();
    await sendMany("erin", 50, (i) => `later ${i}`);
    await sendMany("bob", 1, () => "x");
    await waitFor(async () => (await srv.metric("switchboard_push_in_flight")) === 0, "no push in flight");
    expect(gw.to("erin-old")).toHaveLength(1);
  });
});

describe("what a push carries", () => {
  test("every captured body is {v, id, token, urgency, count}: no plaintext, no sender, no conversation, and every signature verified", () => {
    expect(gw.raw.length).toBeGreaterThan(0);
    expect(gw.badSignatures).toBe(0);
    for (const text of gw.raw) {
      const b = JSON.parse(text);
      expect(Object.keys(b).sort()).toEqual(["count", "id", "token", "urgency", "v"]);
      for (const leak of ["alice", "secret", "text", "bob\"", "#", "hi "]) expect(text).not.toContain(leak);
      expect(b.id).toMatch(/^[A-Za-z0-9_-]{16}\.[01]$/);
    }
  });
});

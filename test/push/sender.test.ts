import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { ApnsProvider } from "../../src/core/push/apns.ts";
import { PushSender, type SenderEvent, type SenderOptions } from "../../src/core/push/sender.ts";
import { pushJob, shouldRemoveToken, type PushJob, type PushResult } from "../../src/core/push/types.ts";
import { WebhookProvider } from "../../src/core/push/webhook.ts";
import { generateVapidKeys, WebPushProvider } from "../../src/core/push/webpush.ts";
import { refusedPort, startHanging, startHttp, subscriber, type FakeServer, type Reply } from "./fakes.ts";

const SECRET = "0123456789abcdef-secret";
let gw: FakeServer;
let replies: Reply[] = [];
beforeAll(async () => {
  gw = await startHttp(() => replies.shift() ?? { status: 200 });
});
afterAll(async () => gw.close());

const hook = (url = `${gw.url}/hook`) => new WebhookProvider({ url, secret: SECRET });
const hookJob = (id: string, registeredAt = 10): PushJob => pushJob({ id, device: `dev-${id}`, urgency: "silent", target: { provider: "webhook", token: `tok-${id}`, registeredAt } });

/** A sender whose results and events are collected; `done(n)` resolves once n results are in. */
function harness(opts: Omit<SenderOptions, "onResult" | "onEvent">) {
  const results: PushResult[] = [];
  const events: SenderEvent[] = [];
  let wake = () => {};
  const sender = new PushSender({ ...opts, onResult: (r) => (results.push(r), wake()), onEvent: (e) => events.push(e) });
  const done = async (n: number) => {
    while (results.length < n) await new Promise<void>((r) => (wake = r));
  };
  return { sender, results, events, done };
}

describe("PushSender", () => {
  test("429 with Retry-After: the retry is scheduled no sooner than the provider asked, then delivered", async () => {
    replies = [{ status: 429, headers: { "retry-after": "1" } }];
    const h = harness({ providers: [hook()], backoff: { baseMs: 5, maxMs: 10 } });
    const before = gw.requests.length;
    expect(h.sender.submit(hookJob("r1"))).toEqual({ ok: true });
    await h.done(1);
    expect(h.results[0]).toMatchObject({ kind: "delivered", attempts: 2, status: 200 });
    const sched = h.events.filter((e) => e.kind === "retry-scheduled");
    expect(sched.length).toBe(1);
    expect((sched[0] as Extract<SenderEvent, { kind: "retry-scheduled" }>).delayMs).toBeGreaterThanOrEqual(1000);
    expect(gw.requests.length - before).toBe(2);
    await h.sender.close();
  });

  test("a Retry-After longer than the in-memory wait is handed back at once as retry-later, with its time", async () => {
    replies = [{ status: 429, headers: { "retry-after": "3600" } }];
    const h = harness({ providers: [hook()] });
    const t0 = Date.now();
    h.sender.submit(hookJob("r2"));
    await h.done(1);
    const r = h.results[0]!;
    expect(r.kind).toBe("retry-later");
    if (r.kind === "retry-later") {
      expect(r.attempts).toBe(1);
      expect(r.at).toBeGreaterThanOrEqual(t0 + 3_600_000);
    }
    await h.sender.close();
  });

  test("a gateway that keeps failing: maxAttempts attempts with backoff, then retry-later", async () => {
    replies = [{ status: 503 }, { status: 503 }, { status: 503 }];
    const h = harness({ providers: [hook()], maxAttempts: 3, backoff: { baseMs: 5, maxMs: 20 } });
    h.sender.submit(hookJob("r3"));
    await h.done(1);
    expect(h.results[0]).toMatchObject({ kind: "retry-later", attempts: 3, reason: "HTTP 503" });
    expect(h.events.filter((e) => e.kind === "retry-scheduled").length).toBe(2);
    await h.sender.close();
  });

  test("an invalid token comes back with its registration time; it is removed only if not refreshed since", async () => {
    replies = [{ status: 410 }];
    const h = harness({ providers: [hook()] });
    h.sender.submit(hookJob("r4", 1234));
    await h.done(1);
    const r = h.results[0]!;
    expect(r).toMatchObject({ kind: "invalid-token", attempts: 1, tokenRegisteredAt: 1234 });
    if (r.kind !== "invalid-token") throw new Error("unreachable");
    expect(r.invalidatedAt).toBeGreaterThan(0);
    expect(shouldRemoveToken(r, { registeredAt: 1234 })).toBe(true);
    expect(shouldRemoveToken(r, { registeredAt: 1235 })).toBe(false); // re-registered after the push went out
    await h.sender.close();
  });

  test("a gateway that hangs or refuses connections does not hold up other providers: they finish before its timeout", async () => {
    const hang = await startHanging();
    const refused = await refusedPort();
    const key = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    const apns = new ApnsProvider({ teamId: "T", keyId: "K", privateKey: key, topic: "x", baseUrl: `https://localhost:${hang.port}` });
    const webpush = new WebPushProvider({ vapid: generateVapidKeys(), subject: "mailto:a@b.c", allowInsecure: true });
    const h = harness({ providers: [hook(), apns, webpush], concurrency: 2, timeoutMs: 5000, maxAttempts: 1 });
    const ua = subscriber();
    const wp = (id: string, endpoint: string) => pushJob({ id, device: id, urgency: "silent", target: { provider: "webpush", endpoint, p256dh: ua.p256dh, auth: ua.auth, registeredAt: 1 } });
    const submitted = [
      ...[1, 2, 3].map((i) => h.sender.submit(pushJob({ id: `a${i}`, device: `a${i}`, urgency: "alert", target: { provider: "apns", token: "ab".repeat(32), registeredAt: 1 } }))),
      ...[1, 2, 3].map((i) => h.sender.submit(wp(`w${i}`, `http://127.0.0.1:${hang.port}/push/${i}`))),
      h.sender.submit(wp("refused", `http://127.0.0.1:${refused}/push`)),
      ...Array.from({ length: 20 }, (_, i) => h.sender.submit(hookJob(`h${i}`))),
    ];
    expect(submitted.every((s) => s.ok)).toBe(true); // submit never waits on a provider
    await h.done(27);
    const byId = new Map(h.results.map((r, i) => [r.job.id, { r, i }]));
    const hooks = [...byId.values()].filter((x) => x.r.job.target.provider === "webhook");
    const hung = ["a1", "a2", "a3", "w1", "w2", "w3"].map((id) => byId.get(id)!);
    expect(hooks.every((x) => x.r.kind === "delivered")).toBe(true);
    expect(hung.every((x) => x.r.kind === "retry-later")).toBe(true);
    // Each hung job either timed out or, sharing an HTTP/2 session with one that did, failed when that session was dropped.
    expect(hung.filter((x) => x.r.kind === "retry-later" && x.r.reason === "timeout").length).toBeGreaterThanOrEqual(4);
    expect(Math.max(...hooks.map((x) => x.i))).toBeLessThan(Math.min(...hung.map((x) => x.i)));
    const ref = byId.get("refused")!.r;
    expect(ref.kind).toBe("retry-later");
    if (ref.kind === "retry-later") expect(ref.reason).toStartWith("network");
    expect(hang.accepted).toBeGreaterThan(0);
    await h.sender.close();
    await hang.close();
  });

  test("the queue is bounded: overflow is refused and counted, close() drops what is held", async () => {
    const hang = await startHanging();
    const h = harness({ providers: [hook(`http://127.0.0.1:${hang.port}/hook`)], queueLimit: 3, concurrency: 1, timeoutMs: 60_000 });
    const outs = [1, 2, 3, 4, 5].map((i) => h.sender.submit(hookJob(`o${i}`)));
    expect(outs.map((o) => o.ok)).toEqual([true, true, true, false, false]);
    expect(outs[3]).toEqual({ ok: false, reason: "overflow" });
    expect(h.events.filter((e) => e.kind === "overflow").length).toBe(2);
    expect(h.sender.stats().webhook).toMatchObject({ waiting: 2, inFlight: 1, overflowed: 2 });
    expect(h.sender.submit(hookJob("o1"))).toEqual({ ok: true, duplicate: true });
    expect(h.sender.submit(pushJob({ id: "n", device: "n", urgency: "silent", target: { provider: "fcm", token: "t", registeredAt: 1 } }))).toEqual({ ok: false, reason: "no-provider" });
    expect(await h.sender.close()).toEqual({ dropped: 3 });
    expect(h.sender.submit(hookJob("late"))).toEqual({ ok: false, reason: "closed" });
    expect(h.results.length).toBe(0);
    await hang.close();
  });
});

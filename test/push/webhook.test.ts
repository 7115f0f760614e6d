import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { pushJob, type PushJob } from "../../src/core/push/types.ts";
import { verifyWebhook, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, WebhookProvider, webhookSignature } from "../../src/core/push/webhook.ts";
import { never, startHttp, type FakeServer, type Reply } from "./fakes.ts";

const SECRET = "s3cret-s3cret-s3cret";
let gw: FakeServer;
let replies: Reply[] = [];
let verdicts: string[] = [];

beforeAll(async () => {
  gw = await startHttp((r) => {
    const v = verifyWebhook(SECRET, r.headers[WEBHOOK_TIMESTAMP] ?? null, r.headers[WEBHOOK_SIGNATURE] ?? null, r.body.toString(), Date.now());
    verdicts.push(v.ok ? "ok" : v.reason);
    if (!v.ok) return { status: 401 };
    return replies.shift() ?? { status: 204 };
  });
});
afterAll(async () => gw.close());

const job = (over: Partial<PushJob> = {}): PushJob => pushJob({ id: "h1", device: "d", urgency: "silent", target: { provider: "webhook", token: "gw-dev-1", registeredAt: 3 }, ...over });

describe("signed webhook", () => {
  test("the gateway verifies the HMAC over timestamp and body; the body is the content-free wake-up", async () => {
    const p = new WebhookProvider({ url: `${gw.url}/hook`, secret: SECRET });
    const before = gw.requests.length;
    expect(await p.send(job({ urgency: "alert", count: 1 }), never)).toEqual({ kind: "delivered", status: 204 });
    expect(verdicts.at(-1)).toBe("ok");
    const r = gw.requests[before]!;
    expect(r.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(r.body.toString())).toEqual({ v: 1, id: "h1", token: "gw-dev-1", urgency: "alert", count: 1 });
    expect(r.headers["idempotency-key"]).toBe("h1"); // the same key as the body's id, for gateways that dedupe on headers
  });

  test("a wrong secret is refused by the gateway and is a permanent error", async () => {
    const p = new WebhookProvider({ url: `${gw.url}/hook`, secret: "another-secret-entirely" });
    expect(await p.send(job(), never)).toEqual({ kind: "permanent", reason: "HTTP 401", status: 401 });
    expect(verdicts.at(-1)).toBe("bad-signature");
  });

  test("a replayed request outside the tolerance is stale; a tampered body or missing header is refused", () => {
    const body = JSON.stringify({ v: 1, id: "x", token: "t", urgency: "silent" });
    const ts = String(Math.floor(Date.now() / 1000));
    const sig = webhookSignature(SECRET, ts, body);
    expect(verifyWebhook(SECRET, ts, sig, body, Date.now())).toEqual({ ok: true });
    expect(verifyWebhook(SECRET, ts, sig, body, Date.now() + 301_000)).toEqual({ ok: false, reason: "stale" });
    expect(verifyWebhook(SECRET, ts, sig, body.replace('"t"', '"u"'), Date.now())).toEqual({ ok: false, reason: "bad-signature" });
    expect(verifyWebhook(SECRET, null, sig, body, Date.now())).toEqual({ ok: false, reason: "malformed" });
  });

  test("a provider whose clock is off by more than the tolerance is refused as stale by the gateway", async () => {
    const p = new WebhookProvider({ url: `${gw.url}/hook`, secret: SECRET, now: () => Date.now() - 600_000 });
    expect((await p.send(job(), never)).kind).toBe("permanent");
    expect(verdicts.at(-1)).toBe("stale");
  });

  test("404/410 from the gateway are invalid tokens, 500 and 429 retry-later", async () => {
    replies = [{ status: 410 }, { status: 500 }, { status: 429, headers: { "retry-after": "2" } }];
    const p = new WebhookProvider({ url: `${gw.url}/hook`, secret: SECRET });
    expect(await p.send(job(), never)).toEqual({ kind: "invalid-token", reason: "HTTP 410", status: 410 });
    expect(await p.send(job(), never)).toEqual({ kind: "retry", reason: "HTTP 500", afterMs: null, status: 500 });
    expect(await p.send(job(), never)).toEqual({ kind: "retry", reason: "HTTP 429", afterMs: 2000, status: 429 });
  });
});

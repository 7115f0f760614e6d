import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { FCM_SCOPE, FcmProvider } from "../../src/core/push/fcm.ts";
import { verifyJwt } from "../../src/core/push/jwt.ts";
import { pushJob, type PushJob } from "../../src/core/push/types.ts";
import { never, startHttp, type FakeServer, type Recorded, type Reply } from "./fakes.ts";

const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const EMAIL = "push@switchboard-test.iam.gserviceaccount.com";

let oauth: FakeServer;
let fcm: FakeServer;
let issued: string[] = [];
let expiresIn = 3600;
let replies: Reply[] = [];
let clock = 0; // added to Date.now(): lets a test move past a token's expiry without waiting

/** Google's token endpoint: RFC 7523 jwt-bearer grant, RS256 assertion from the service account. */
function tokenEndpoint(r: Recorded): Reply {
  const form = new URLSearchParams(r.body.toString());
  if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer") return { status: 400, body: '{"error":"unsupported_grant_type"}' };
  const v = verifyJwt("RS256", form.get("assertion") ?? "", publicKey);
  if (!v) return { status: 400, body: '{"error":"invalid_grant","error_description":"Invalid JWT Signature."}' };
  const c = v.claims;
  const ok = c.iss === EMAIL && c.scope === FCM_SCOPE && c.aud === `${oauth.url}/token` && (c.exp as number) - (c.iat as number) === 3600;
  if (!ok) return { status: 400, body: '{"error":"invalid_grant"}' };
  const token = `ya29.test-${issued.length}`;
  issued.push(token);
  return { status: 200, headers: { "content-type": "application/json" }, body: JSON.stringify({ access_token: token, expires_in: expiresIn, token_type: "Bearer" }) };
}

beforeAll(async () => {
  oauth = await startHttp(tokenEndpoint);
  fcm = await startHttp((r) => {
    if (r.path !== "/v1/projects/sb-test/messages:send") return { status: 404, body: "{}" };
    const bearer = /^Bearer (.+)$/.exec(r.headers.authorization ?? "")?.[1];
    // Only the newest token is valid: an old cached one must have been dropped.
    if (!bearer || bearer !== issued[issued.length - 1]) return { status: 401, body: JSON.stringify({ error: { code: 401, status: "UNAUTHENTICATED" } }) };
    return replies.shift() ?? { status: 200, body: JSON.stringify({ name: "projects/sb-test/messages/1" }) };
  });
});
afterAll(async () => {
  await oauth.close();
  await fcm.close();
});

const provider = () =>
  new FcmProvider({
    serviceAccount: { project_id: "sb-test", client_email: EMAIL, private_key: privateKey.export({ type: "pkcs8", format: "pem" }) as string, token_uri: `${oauth.url}/token` },
    baseUrl: fcm.url,
    now: () => Date.now() + clock,
  });
const job = (over: Partial<PushJob> = {}): PushJob => pushJob({ id: "f1", device: "d1", urgency: "silent", target: { provider: "fcm", token: "fcm-token-1", registeredAt: 5 }, ...over });
const fcmError = (status: number, code: string, errorCode?: string, field?: string): Reply => ({
  status,
  body: JSON.stringify({
    error: {
      code: status,
      status: code,
      details: [
        ...(errorCode ? [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode }] : []),
        ...(field ? [{ "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field, description: "Invalid registration token" }] }] : []),
      ],
    },
  }),
});

describe("FCM HTTP v1", () => {
  test("exchanges a verified RS256 assertion for an access token, caches it, and sends a data-only message with it", async () => {
    const p = provider();
    const before = fcm.requests.length;
    const outs = await Promise.all([p.send(job(), never), p.send(job({ urgency: "alert", count: 2 }), never), p.send(job(), never)]);
    expect(outs.map((o) => o.kind)).toEqual(["delivered", "delivered", "delivered"]);
    expect(p.tokenExchanges).toBe(1); // concurrent sends shared one exchange
    const [silent, alert] = fcm.requests.slice(before).map((r) => JSON.parse(r.body.toString()));
    expect(silent).toEqual({ message: { token: "fcm-token-1", data: { sb: "1" }, android: { priority: "NORMAL", ttl: "2419200s", collapse_key: "sb" } } });
    expect(alert.message.android.priority).toBe("HIGH");
    expect(alert.message.data).toEqual({ sb: "1", n: "2" });
  });

  test("a ring: HIGH, ttl 0 (now or never), no collapse key, data sb and ring only", async () => {
    const p = provider();
    const before = fcm.requests.length;
    expect((await p.send(job({ urgency: "ring" }), never)).kind).toBe("delivered");
    expect(JSON.parse(fcm.requests[before]!.body.toString())).toEqual({ message: { token: "fcm-token-1", data: { sb: "1", ring: "1" }, android: { priority: "HIGH", ttl: "0s" } } });
  });

  test("an access token is fetched again once it is about to expire", async () => {
    const p = provider();
    expiresIn = 120;
    expect((await p.send(job(), never)).kind).toBe("delivered");
    expect((await p.send(job(), never)).kind).toBe("delivered");
    expect(p.tokenExchanges).toBe(1);
    clock += 61_000; // inside the last minute of the token's 120 s
    expect((await p.send(job(), never)).kind).toBe("delivered");
    expect(p.tokenExchanges).toBe(2);
    expiresIn = 3600;
    clock = 0;
  });

  test("401 drops the cached token: the retry fetches a fresh one", async () => {
    const p = provider();
    expect((await p.send(job(), never)).kind).toBe("delivered");
    await provider().send(job(), never); // another instance's exchange makes p's token stale on the fake
    expect(await p.send(job(), never)).toEqual({ kind: "retry", reason: "UNAUTHENTICATED", afterMs: 0, status: 401 });
    expect((await p.send(job(), never)).kind).toBe("delivered");
    expect(p.tokenExchanges).toBe(2);
  });

  test("UNREGISTERED and an INVALID_ARGUMENT on message.token are invalid tokens; other errors are not blamed on the token", async () => {
    const p = provider();
    replies = [
      fcmError(404, "NOT_FOUND", "UNREGISTERED"),
      fcmError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token"),
      fcmError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.android.ttl"),
      fcmError(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    ];
    expect(await p.send(job(), never)).toEqual({ kind: "invalid-token", reason: "UNREGISTERED", status: 404 });
    expect(await p.send(job(), never)).toEqual({ kind: "invalid-token", reason: "INVALID_ARGUMENT (token)", status: 400 });
    expect(await p.send(job(), never)).toEqual({ kind: "permanent", reason: "INVALID_ARGUMENT", status: 400 });
    expect(await p.send(job(), never)).toEqual({ kind: "permanent", reason: "SENDER_ID_MISMATCH", status: 403 });
  });

  test("429 with an HTTP-date Retry-After and 503 are retry-later", async () => {
    const p = provider();
    const at = new Date(Math.ceil(Date.now() / 1000) * 1000 + 120_000).toUTCString();
    replies = [{ ...fcmError(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), headers: { "retry-after": at } }, fcmError(503, "UNAVAILABLE", "UNAVAILABLE")];
    const o = await p.send(job(), never);
    expect(o.kind).toBe("retry");
    if (o.kind !== "retry") throw new Error("unreachable");
    expect(o.reason).toBe("QUOTA_EXCEEDED");
    expect(o.afterMs!).toBeGreaterThan(100_000);
    expect(o.afterMs!).toBeLessThanOrEqual(121_000);
    expect(await p.send(job(), never)).toEqual({ kind: "retry", reason: "UNAVAILABLE", afterMs: null, status: 503 });
  });

  test("a key the token endpoint does not know is a permanent error, and nothing is sent to FCM", async () => {
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    const p = new FcmProvider({ serviceAccount: { project_id: "sb-test", client_email: EMAIL, private_key: other, token_uri: `${oauth.url}/token` }, baseUrl: fcm.url });
    const before = fcm.requests.length;
    expect(await p.send(job(), never)).toEqual({ kind: "permanent", reason: "oauth: invalid_grant", status: 400 });
    expect(fcm.requests.length).toBe(before);
  });
});

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { ApnsProvider, apnsId } from "../../src/core/push/apns.ts";
import { verifyJwt } from "../../src/core/push/jwt.ts";
import { pushJob, type PushJob } from "../../src/core/push/types.ts";
import { never, startApns, type Recorded, type Reply } from "./fakes.ts";

const TEAM = "TEAM123456";
const KID = "KEY7654321";
const TOPIC = "org.example.switchboard";
const TOKEN = "a".repeat(64);
const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
const p8 = privateKey.export({ type: "pkcs8", format: "pem" }) as string;

/** What Apple checks before it looks at the payload: the provider token and the headers. */
function checkAuth(r: Recorded): string | null {
  const m = /^bearer (.+)$/.exec(r.headers.authorization ?? "");
  if (!m) return "MissingProviderToken";
  const v = verifyJwt("ES256", m[1]!, publicKey);
  if (!v) return "InvalidProviderToken";
  if (v.header.kid !== KID || v.claims.iss !== TEAM || !Number.isInteger(v.claims.iat)) return "InvalidProviderToken";
  if (Math.abs((v.claims.iat as number) - Date.now() / 1000) > 3600) return "ExpiredProviderToken";
  if (!r.path.startsWith("/3/device/")) return "BadPath";
  if (!r.headers["apns-topic"]?.startsWith(TOPIC)) return "MissingTopic";
  if (!["background", "alert", "voip"].includes(r.headers["apns-push-type"] ?? "")) return "InvalidPushType";
  return null;
}

let replies: Reply[] = [];
let apns: Awaited<ReturnType<typeof startApns>>;
let provider: ApnsProvider;

beforeAll(async () => {
  apns = await startApns((r) => {
    const bad = checkAuth(r);
    if (bad) return { status: 403, body: JSON.stringify({ reason: bad }) };
    return replies.shift() ?? { status: 200, headers: { "apns-id": "00000000-0000-0000-0000-000000000001" } };
  });
  provider = new ApnsProvider({ teamId: TEAM, keyId: KID, privateKey: p8, topic: TOPIC, baseUrl: apns.url, ca: apns.ca });
});
afterAll(async () => {
  await provider.close();
  await apns.close();
});

const job = (over: Partial<PushJob> = {}, voip = false): PushJob =>
  pushJob({ id: "j1", device: "dev1", urgency: "silent", target: { provider: "apns", token: TOKEN, registeredAt: 1, ...(voip ? { voip } : {}) }, ...over });

describe("APNs over HTTP/2", () => {
  test("a silent push: verified ES256 provider token, background type, priority 5, collapse id, expiration, aps content-available only", async () => {
    const before = apns.requests.length;
    expect(await provider.send(job(), never)).toEqual({ kind: "delivered", status: 200 });
    const r = apns.requests[before]!;
    expect(checkAuth(r)).toBeNull();
    expect(r.method).toBe("POST");
    expect(r.path).toBe(`/3/device/${TOKEN}`);
    expect(r.headers["apns-topic"]).toBe(TOPIC);
    expect(r.headers["apns-push-type"]).toBe("background");
    expect(r.headers["apns-priority"]).toBe("5");
    expect(r.headers["apns-collapse-id"]).toBe("sb");
    expect(Number(r.headers["apns-expiration"])).toBeGreaterThan(Date.now() / 1000 + 29 * 86400);
    expect(JSON.parse(r.body.toString())).toEqual({ aps: { "content-available": 1 } });
  });

  test("apns-id is the job key as a UUID: the same on every attempt of one key, another for another key", async () => {
    const before = apns.requests.length;
    await provider.send(job({ id: "k.0" }), never);
    await provider.send(job({ id: "k.0" }), never);
    await provider.send(job({ id: "k.1" }), never);
    const ids = apns.requests.slice(before).map((r) => r.headers["apns-id"]);
    expect(ids[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(ids[1]).toBe(ids[0]!);
    expect(ids[2]).not.toBe(ids[0]!);
    expect(ids[0]).toBe(apnsId("k.0"));
  });

  test("an alert push carries a fixed localizable key, mutable-content and the count as badge, at priority 10", async () => {
    const before = apns.requests.length;
    expect((await provider.send(job({ urgency: "alert", count: 7 }), never)).kind).toBe("delivered");
    const r = apns.requests[before]!;
    expect(r.headers["apns-push-type"]).toBe("alert");
    expect(r.headers["apns-priority"]).toBe("10");
    expect(JSON.parse(r.body.toString())).toEqual({ aps: { alert: { "loc-key": "SB_NEW_MESSAGE" }, "mutable-content": 1, sound: "default", badge: 7 } });
  });

  test("a ring to a VoIP token goes to <topic>.voip with push type voip, priority 10, now or never, no collapse id", async () => {
    const before = apns.requests.length;
    expect((await provider.send(job({ urgency: "ring" }, true), never)).kind).toBe("delivered");
    const r = apns.requests[before]!;
    expect(r.headers["apns-topic"]).toBe(`${TOPIC}.voip`);
    expect(r.headers["apns-push-type"]).toBe("voip");
    expect(r.headers["apns-priority"]).toBe("10");
    expect(r.headers["apns-expiration"]).toBe("0");
    expect(r.headers["apns-collapse-id"]).toBeUndefined();
    expect(JSON.parse(r.body.toString())).toEqual({ aps: {} });
  });

  test("a ring to a regular token is a visible 'incoming call' alert; a message wake-up never goes to a VoIP token", async () => {
    const before = apns.requests.length;
    expect((await provider.send(job({ urgency: "ring" }), never)).kind).toBe("delivered");
    const r = apns.requests[before]!;
    expect(r.headers["apns-topic"]).toBe(TOPIC);
    expect(r.headers["apns-push-type"]).toBe("alert");
    expect(r.headers["apns-expiration"]).toBe("0");
    expect(JSON.parse(r.body.toString())).toEqual({ aps: { alert: { "loc-key": "SB_INCOMING_CALL" }, "mutable-content": 1, sound: "default" } });
    // Apple ends an app that gets a VoIP push and reports no call: silent and alert jobs for a VoIP token are refused.
    expect(() => job({ urgency: "silent" }, true)).toThrow("VoIP (PushKit) token takes rings only");
    expect(() => job({ urgency: "alert" }, true)).toThrow("VoIP (PushKit) token takes rings only");
    expect(apns.requests.length).toBe(before + 1);
  });

  test("one HTTP/2 session and one provider token serve many concurrent pushes", async () => {
    const sessions = apns.sessions;
    const before = apns.requests.length;
    const outs = await Promise.all(Array.from({ length: 20 }, (_, i) => provider.send(job({ id: `c${i}` }), never)));
    expect(outs.every((o) => o.kind === "delivered")).toBe(true);
    expect(apns.sessions).toBe(sessions);
    expect(new Set(apns.requests.slice(before).map((r) => r.headers.authorization)).size).toBe(1);
  });

  test("410 Unregistered and 400 BadDeviceToken are invalid tokens; DeviceTokenNotForTopic is our configuration, kept as permanent", async () => {
    replies = [
      { status: 410, body: JSON.stringify({ reason: "Unregistered", timestamp: Date.now() }) },
      { status: 400, body: JSON.stringify({ reason: "BadDeviceToken" }) },
      { status: 400, body: JSON.stringify({ reason: "DeviceTokenNotForTopic" }) },
    ];
    expect(await provider.send(job(), never)).toEqual({ kind: "invalid-token", reason: "Unregistered", status: 410 });
    expect(await provider.send(job(), never)).toEqual({ kind: "invalid-token", reason: "BadDeviceToken", status: 400 });
    expect(await provider.send(job(), never)).toEqual({ kind: "permanent", reason: "DeviceTokenNotForTopic", status: 400 });
  });

  test("a token that is not hex never reaches the :path", async () => {
    const before = apns.requests.length;
    const out = await provider.send(job({ target: { provider: "apns", token: "../../x", registeredAt: 1 } }), never);
    expect(out.kind).toBe("invalid-token");
    expect(apns.requests.length).toBe(before);
  });

  test("429 and 503 are retry-later with the Retry-After; ExpiredProviderToken re-signs and retries at once", async () => {
    replies = [
      { status: 429, headers: { "retry-after": "7" }, body: JSON.stringify({ reason: "TooManyRequests" }) },
      { status: 503, body: JSON.stringify({ reason: "ServiceUnavailable" }) },
      { status: 403, body: JSON.stringify({ reason: "ExpiredProviderToken" }) },
    ];
    expect(await provider.send(job(), never)).toEqual({ kind: "retry", reason: "TooManyRequests", afterMs: 7000, status: 429 });
    expect(await provider.send(job(), never)).toEqual({ kind: "retry", reason: "ServiceUnavailable", afterMs: null, status: 503 });
    const before = apns.requests.length;
    expect(await provider.send(job(), never)).toEqual({ kind: "retry", reason: "ExpiredProviderToken", afterMs: 0, status: 403 });
    expect((await provider.send(job(), never)).kind).toBe("delivered");
    const [expired, fresh] = apns.requests.slice(before);
    expect(fresh!.headers.authorization).not.toBe(expired!.headers.authorization);
    expect(checkAuth(fresh!)).toBeNull();
  });

  test("a key that does not match the registered one is refused by the server (the check can fail)", async () => {
    const other = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    const wrong = new ApnsProvider({ teamId: TEAM, keyId: KID, privateKey: other, topic: TOPIC, baseUrl: apns.url, ca: apns.ca });
    expect(await wrong.send(job(), never)).toEqual({ kind: "permanent", reason: "InvalidProviderToken", status: 403 });
    await wrong.close();
  });
});

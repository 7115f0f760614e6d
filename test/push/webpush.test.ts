import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createECDH } from "node:crypto";
import { fromB64url, verifyJwt } from "../../src/core/push/jwt.ts";
import { isPrivateAddress } from "../../src/core/push/ssrf.ts";
import { pushJob, type PushJob } from "../../src/core/push/types.ts";
import { encryptAes128gcm, generateVapidKeys, WebPushProvider } from "../../src/core/push/webpush.ts";
import { never, p256PublicKey, startHttp, subscriber, type FakeServer, type Recorded, type Reply } from "./fakes.ts";

// RFC 8291 §5 / Appendix A.
const RFC = {
  plaintext: "When I grow up, I want to be a watermelon",
  asPrivate: "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
  uaPrivate: "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
  uaPublic: "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
  auth: "BTBZMqHH6r4Tts7J_aSIgg",
  salt: "DGv6ra1nlYgDCS1FRnbzlw",
  body:
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
};

describe("RFC 8291 test vector", () => {
  test("encryption with the RFC's salt and sender key gives the RFC's body byte for byte", () => {
    const as = createECDH("prime256v1");
    as.setPrivateKey(fromB64url(RFC.asPrivate));
    const body = encryptAes128gcm(Buffer.from(RFC.plaintext), fromB64url(RFC.uaPublic), fromB64url(RFC.auth), { salt: fromB64url(RFC.salt), ephemeral: as });
    expect(body.toString("base64url")).toBe(RFC.body);
  });

  test("the test's own receiver decrypts the RFC's body with the subscriber's private key", () => {
    const ua = subscriber(fromB64url(RFC.uaPrivate), fromB64url(RFC.auth));
    expect(ua.p256dh).toBe(RFC.uaPublic);
    expect(ua.decrypt(fromB64url(RFC.body)).toString()).toBe(RFC.plaintext);
    const tampered = fromB64url(RFC.body);
    tampered[tampered.length - 3]! ^= 1;
    expect(() => ua.decrypt(tampered)).toThrow();
  });
});

const vapid = generateVapidKeys();
const ua = subscriber();
let service: FakeServer;
let replies: Reply[] = [];

/** A push service's VAPID check (RFC 8292 §2-3): signature by k, aud = our origin, exp within 24 h, sub a contact. */
function checkVapid(r: Recorded): string | null {
  const m = /^vapid t=([^,]+), k=([A-Za-z0-9_-]+)$/.exec(r.headers.authorization ?? "");
  if (!m) return "no vapid";
  const k = fromB64url(m[2]!);
  if (m[2] !== vapid.publicKey) return "unknown key";
  const v = verifyJwt("ES256", m[1]!, p256PublicKey(k));
  if (!v) return "bad signature";
  const now = Date.now() / 1000;
  if (v.claims.aud !== service.url) return `aud ${v.claims.aud}`;
  const exp = v.claims.exp as number;
  if (!(exp > now && exp <= now + 24 * 3600)) return "exp";
  if (!/^mailto:/.test(String(v.claims.sub))) return "sub";
  return null;
}

beforeAll(async () => {
  service = await startHttp((r) => {
    const bad = checkVapid(r);
    if (bad) return { status: 403, body: bad };
    if (r.headers["content-encoding"] !== "aes128gcm") return { status: 400, body: "encoding" };
    return replies.shift() ?? { status: 201, headers: { location: `${service.url}/m/1` } };
  });
});
afterAll(async () => service.close());

const provider = (over: Partial<ConstructorParameters<typeof WebPushProvider>[0]> = {}) =>
  new WebPushProvider({ vapid, subject: "mailto:ops@example.org", allowInsecure: true, ...over });
const job = (over: Partial<PushJob> = {}, endpoint = `${service.url}/push/sub-1`): PushJob =>
  pushJob({ id: "w1", device: "d", urgency: "silent", target: { provider: "webpush", endpoint, p256dh: ua.p256dh, auth: ua.auth, registeredAt: 9 }, ...over });

describe("Web Push (RFC 8030 + 8291 + 8292)", () => {
  test("a push carries a valid VAPID JWT, TTL, Urgency and Topic, and the subscriber decrypts a wake-up and count", async () => {
    const before = service.requests.length;
    expect(await provider().send(job({ urgency: "alert", count: 4 }), never)).toEqual({ kind: "delivered", status: 201 });
    const r = service.requests[before]!;
    expect(checkVapid(r)).toBeNull();
    expect(r.path).toBe("/push/sub-1");
    expect(r.headers.ttl).toBe(String(28 * 86400));
    expect(r.headers.urgency).toBe("high");
    expect(r.headers.topic).toBe("sb");
    expect(r.headers["content-type"]).toBe("application/octet-stream");
    expect(JSON.parse(ua.decrypt(r.body).toString())).toEqual({ sb: 1, alert: 1, n: 4 });
  });

  test("a silent push is Urgency normal; every push has a fresh salt and sender key", async () => {
    const p = provider();
    const before = service.requests.length;
    await p.send(job(), never);
    await p.send(job(), never);
    const [a, b] = service.requests.slice(before);
    expect(a!.headers.urgency).toBe("normal");
    expect(JSON.parse(ua.decrypt(a!.body).toString())).toEqual({ sb: 1 });
    expect(a!.body.subarray(0, 86).equals(b!.body.subarray(0, 86))).toBe(false);
  });

  test("a ring: Urgency high, TTL 0, no Topic (it replaces no pending wake-up), decrypts to the flag and ring", async () => {
    const before = service.requests.length;
    expect((await provider().send(job({ urgency: "ring" }), never)).kind).toBe("delivered");
    const r = service.requests[before]!;
    expect(checkVapid(r)).toBeNull();
    expect(r.headers.urgency).toBe("high");
    expect(r.headers.ttl).toBe("0");
    expect(r.headers.topic).toBeUndefined();
    expect(JSON.parse(ua.decrypt(r.body).toString())).toEqual({ sb: 1, ring: 1 });
  });

  test("404 and 410 are invalid subscriptions; 429 is retry-later with Retry-After; 413 and 403 are permanent", async () => {
    replies = [{ status: 404 }, { status: 410 }, { status: 429, headers: { "retry-after": "30" } }, { status: 413 }, { status: 403 }];
    const p = provider();
    expect(await p.send(job(), never)).toEqual({ kind: "invalid-token", reason: "HTTP 404", status: 404 });
    expect(await p.send(job(), never)).toEqual({ kind: "invalid-token", reason: "HTTP 410", status: 410 });
    expect(await p.send(job(), never)).toEqual({ kind: "retry", reason: "HTTP 429", afterMs: 30_000, status: 429 });
    expect(await p.send(job(), never)).toEqual({ kind: "permanent", reason: "HTTP 413", status: 413 });
    expect(await p.send(job(), never)).toEqual({ kind: "permanent", reason: "HTTP 403", status: 403 });
  });

  test("a VAPID key the service does not expect is refused by it (the check can fail)", async () => {
    const out = await provider({ vapid: generateVapidKeys() }).send(job(), never);
    expect(out).toEqual({ kind: "permanent", reason: "HTTP 403", status: 403 });
  });

  test("SSRF rules: without allowInsecure, http, localhost, private and loopback endpoints are refused before any request", async () => {
    const p = provider({ allowInsecure: false });
    const before = service.requests.length;
    for (const ep of [service.url + "/x", "https://localhost/x", "https://127.0.0.1/x", "https://10.1.2.3/x", "https://[::1]/x", "https://[fd00::1]/x", "https://u:p@push.example/x"]) {
      const out = await p.send(job({}, ep), never);
      expect(out.kind).toBe("invalid-token");
    }
    expect(service.requests.length).toBe(before);
  });

  test("isPrivateAddress knows the private, loopback, link-local, CGNAT and mapped ranges, and lets public ones through", () => {
    for (const ip of ["127.0.0.1", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "::", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "224.0.0.1"]) {
      expect(isPrivateAddress(ip)).toBe(true);
    }
    for (const ip of ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]) expect(isPrivateAddress(ip)).toBe(false);
  });

  test("malformed subscription keys are an invalid subscription, not a throw", async () => {
    const out = await provider().send(pushJob({ id: "w", device: "d", urgency: "silent", target: { provider: "webpush", endpoint: `${service.url}/p`, p256dh: "AAAA", auth: ua.auth, registeredAt: 1 } }), never);
    expect(out.kind).toBe("invalid-token");
  });
});

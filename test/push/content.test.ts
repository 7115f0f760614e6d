/**
 * A capture of every push payload, with all four providers configured in a
 * real server process against local stand-ins (APNs over HTTP/2 + TLS, an
 * OAuth2 token endpoint and FCM, a Web Push service, a webhook gateway):
 * offline devices of each kind are sent messages, and every byte of every
 * request (path, headers, body; the Web Push body decrypted with the
 * subscriber's key) is searched for the plaintext, the sender and the
 * conversation. Also the wiring of each provider's `push.*` settings.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { pushCalls, type PushEndpoint } from "../../src/client/push.ts";
import { generateVapidKeys } from "../../src/core/push/webpush.ts";
import { startApns, startHttp, subscriber, type FakeServer, type Recorded } from "./fakes.ts";
import { SECRET } from "./gateway.ts";

const dir = mkdtempSync(join(tmpdir(), "sb-push-creds-"));
const fakes: FakeServer[] = [];
let srv: TestServer | undefined;
let apns: Awaited<ReturnType<typeof startApns>>;
let oauth: FakeServer, fcm: FakeServer, wp: FakeServer, hook: FakeServer;
const ua = subscriber();
const vapid = generateVapidKeys();

beforeAll(async () => {
  apns = await startApns(() => ({ status: 200 }));
  oauth = await startHttp(() => ({ status: 200, headers: { "content-type": "application/json" }, body: JSON.stringify({ access_token: "ya29.t", expires_in: 3600, token_type: "Bearer" }) }));
  fcm = await startHttp(() => ({ status: 200, body: '{"name":"projects/sb-test/messages/1"}' }));
  wp = await startHttp(() => ({ status: 201 }));
  hook = await startHttp(() => ({ status: 204 }));
  fakes.push(apns, oauth, fcm, wp, hook);
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  writeFileSync(join(dir, "AuthKey.p8"), ec);
  writeFileSync(join(dir, "apns-ca.pem"), apns.ca);
  writeFileSync(join(dir, "sa.json"), JSON.stringify({ project_id: "sb-test", client_email: "sb@sb-test.iam.gserviceaccount.com", private_key: rsa, token_uri: `${oauth.url}/token` }));
  srv = await startServer({
    args: [
      "--push-tick-ms", "50", "--push-escalate-after", "1",
      "--push-apns-team-id", "TEAM123456", "--push-apns-key-id", "KEY7654321", "--push-apns-key-file", join(dir, "AuthKey.p8"),
      "--push-apns-topic", "org.example.chat", "--push-apns-url", apns.url, "--push-apns-ca-file", join(dir, "apns-ca.pem"),
      "--push-fcm-service-account-file", join(dir, "sa.json"), "--push-fcm-url", fcm.url,
      "--push-webpush-vapid-public", vapid.publicKey, "--push-webpush-vapid-private", vapid.privateKey, "--push-webpush-subject", "mailto:ops@example.org",
      "--push-webpush-allow-insecure", "true",
      "--push-webhook-url", `${hook.url}/hook`, "--push-webhook-secret", SECRET,
    ],
  });
});
afterAll(async () => {
  srv?.cleanup();
  for (const f of fakes) await f.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Everything a provider was told, as text: path, header values, body (Web Push: decrypted). */
function said(r: Recorded, webpush = false): string {
  const body = webpush ? ua.decrypt(r.body).toString() : r.body.toString();
  return [r.path, ...Object.values(r.headers), body].join("\n");
}

test("every request to every provider carries a wake-up and a count, never the plaintext, the sender or the conversation", async () => {
  const s = srv!;
  const endpoints: [string, PushEndpoint][] = [
    ["iosuser", { p: "apns", token: "a1b2".repeat(16) }],
    ["droiduser", { p: "fcm", token: "fcm-token_1:abc" }],
    ["webuser", { p: "webpush", endpoint: `${wp.url}/sub/1`, p256dh: ua.p256dh, auth: ua.auth }],
    ["gwuser", { p: "webhook", token: "gw-token-1" }],
  ];
  {
    const c = await s.client(await s.newDevice("probe"));
    expect((await pushCalls(c).info()).providers.sort()).toEqual(["apns", "fcm", "webhook", "webpush"]);
    expect((await pushCalls(c).info()).vapid).toBe(vapid.publicKey);
    await c.close();
  }
  for (const [name, e] of endpoints) {
    const c = await s.client(await s.newDevice(name));
    await pushCalls(c).register(e);
    await c.close();
  }
  const sender = await s.client(await s.newDevice("alice"));
  for (const [name] of endpoints) for (let i = 0; i < 5; i++) await sender.send(name, `plaintext-marker ${name} ${i}`);
  await sender.close();
  // Silent, then (push.escalate_after 1 s) visible: both stages captured for each provider.
  await waitFor(() => apns.requests.length >= 2 && fcm.requests.length >= 2 && wp.requests.length >= 2 && hook.requests.length >= 2, "two pushes per provider");
  const all = [
    ...apns.requests.map((r) => said(r)), ...fcm.requests.map((r) => said(r)), ...wp.requests.map((r) => said(r, true)), ...hook.requests.map((r) => said(r)),
  ];
  for (const text of all) {
    for (const leak of ["plaintext-marker", "alice", "iosuser", "droiduser", "webuser", "gwuser"]) expect(text).not.toContain(leak);
  }
  // The bodies are exactly the content-free wake-ups docs/PUSH.md lists. The count is the queue's depth when the
  // push left, so 1..5 here (the silent push may leave before the last message is in).
  const count = expect.stringMatching(/^[1-5]$/);
  const num = (x: unknown) => JSON.parse(JSON.stringify(x), (k, v) => (k === "badge" || k === "n" ? String(v) : v));
  expect(JSON.parse(apns.requests[0]!.body.toString())).toEqual({ aps: { "content-available": 1 } });
  expect(num(JSON.parse(apns.requests[1]!.body.toString()))).toEqual({ aps: { alert: { "loc-key": "SB_NEW_MESSAGE" }, "mutable-content": 1, sound: "default", badge: count } });
  expect(JSON.parse(fcm.requests[0]!.body.toString()).message.data).toEqual({ sb: "1", n: count });
  expect(num(JSON.parse(ua.decrypt(wp.requests[1]!.body).toString()))).toEqual({ sb: 1, n: count, alert: 1 });
  expect(Object.keys(JSON.parse(hook.requests[0]!.body.toString())).sort()).toEqual(["count", "id", "token", "urgency", "v"]);
  expect(oauth.requests.length).toBeGreaterThanOrEqual(1); // FCM's OAuth2 exchange went to the configured token_uri
}, 60_000);

test("a half-configured provider stops the start naming what is missing", async () => {
  const p = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/cli/main.ts"), "serve", "--data-dir", join(dir, "half"), "--tcp-port", "0", "--tls-port", "-1", "--http-port", "-1", "--push-apns-team-id", "TEAM123456"], { stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  expect(code).not.toBe(0);
  expect(err).toContain("push.apns.team_id set but push.apns.key_id, push.apns.key_file, push.apns.topic not");
});

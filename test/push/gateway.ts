/**
 * A webhook push gateway for the server-level push tests: a real HTTP server
 * (fakes.ts) that checks every request's HMAC signature and keeps every body.
 * `dead` tokens are answered 410 (the subscription is gone); requests for
 * `held` tokens are kept and never answered (a push in flight).
 */
import { verifyWebhook, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, type WebhookBody } from "../../src/core/push/webhook.ts";
import { startHttp, type FakeServer } from "./fakes.ts";
import { pushCalls } from "../../src/client/push.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { TestServer } from "../helpers/harness.ts";

/** A node's delivered pushes so far (0 before its first: the labelled series exists only once counted). */
export async function delivered(n: TestServer): Promise<number> {
  const { text } = await n.http_get("/metrics");
  return text.split("\n").filter((l) => l.startsWith("switchboard_push_total{") && l.includes('result="delivered"')).reduce((s, l) => s + Number(l.split(" ").pop()), 0);
}

export const SECRET = "gateway-secret-0123456789";

export interface Gateway {
  fake: FakeServer;
  bodies: WebhookBody[];
  /** Raw request bodies, for the content check. */
  raw: string[];
  badSignatures: number;
  dead: Set<string>;
  held: Set<string>;
  to(token: string): WebhookBody[];
  close(): Promise<void>;
}

export async function startGateway(port = 0): Promise<Gateway> {
  const gw: Gateway = {
    fake: null as unknown as FakeServer, bodies: [], raw: [], badSignatures: 0, dead: new Set(), held: new Set(),
    to: (token) => gw.bodies.filter((b) => b.token === token),
    close: () => gw.fake.close(),
  };
  gw.fake = await startHttp((r) => {
    const text = r.body.toString();
    const v = verifyWebhook(SECRET, r.headers[WEBHOOK_TIMESTAMP] ?? null, r.headers[WEBHOOK_SIGNATURE] ?? null, text, Date.now());
    if (!v.ok) {
      gw.badSignatures++;
      return { status: 401 };
    }
    const body = JSON.parse(text) as WebhookBody;
    gw.raw.push(text);
    gw.bodies.push(body);
    if (gw.held.has(body.token)) return new Promise(() => {});
    return gw.dead.has(body.token) ? { status: 410 } : { status: 204 };
  }, port);
  return gw;
}

/** Server flags for a webhook provider at `url`. */
export const webhookArgs = (url: string, extra: Record<string, string | number> = {}): string[] => [
  "--push-webhook-url", url, "--push-webhook-secret", SECRET, "--push-tick-ms", "50",
  ...Object.entries(extra).flatMap(([k, v]) => [`--push-${k}`, String(v)]),
];

/** A new device of `account` that registers webhook `token` and goes offline; its key file, to log in with later. */
export async function offlineWebhookDevice(s: TestServer, account: string, token: string): Promise<KeyFile> {
  const kf = await s.newDevice(account);
  const c = await s.client(kf);
  await pushCalls(c).register({ p: "webhook", token });
  await c.close();
  return kf;
}

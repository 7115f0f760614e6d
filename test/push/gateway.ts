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
import { waitFor, type TestServer } from "../helpers/harness.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";

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

/**
 * For the cluster push tests (three-nodes.ts): an offline device of `account` (homed on `home`) with webhook
 * `tok-<account>` registered there, a client of `sender` through node `senderVia`, and one message from it, whose
 * silent wake-up the gateway got. Returns the token, the device's key file and the sender's client.
 */
export async function wokenOn(
  t: { device(account: string): Promise<KeyFile>; connect(key: KeyFile, via: string): Promise<SwitchboardClient> },
  gw: Gateway, account: string, home: string, sender: string, senderVia: string, text: string,
): Promise<{ tok: string; kr: KeyFile; cs: SwitchboardClient }> {
  const tok = `tok-${account}`;
  const kr = await t.device(account);
  const rc = await t.connect(kr, home);
  await pushCalls(rc).register({ p: "webhook", token: tok });
  await rc.close();
  const cs = await t.connect(await t.device(sender), senderVia);
  await cs.send(account, text);
  await waitFor(() => gw.to(tok).length === 1, "the silent wake-up from the home");
  return { tok, kr, cs };
}

/**
 * A signed JSON webhook for operators who run their own push gateway (a
 * UnifiedPush distributor, an on-prem relay). The body is the same
 * content-free wake-up as every other provider; the gateway maps `token` to a
 * device it knows. Signed like Stripe's webhooks: HMAC-SHA256 over
 * "<timestamp>.<body>" so a captured request cannot be replayed after the
 * tolerance window, and `id` (the job's idempotency key) lets the gateway drop
 * a retry it already handled.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { isAnswer, post, pushServiceOutcome } from "./http.ts";
import type { PushJob, PushOutcome, PushProvider, Urgency } from "./types.ts";

export const WEBHOOK_TIMESTAMP = "x-switchboard-timestamp";
export const WEBHOOK_SIGNATURE = "x-switchboard-signature";
/** The job stage's idempotency key (also the body's `id`): the same on every attempt, also after a crash mid-send. */
export const WEBHOOK_IDEMPOTENCY = "idempotency-key";
/** Default replay window a receiver should accept (seconds either side of its clock). */
export const WEBHOOK_TOLERANCE_S = 300;

export interface WebhookConfig {
  /** The operator's gateway, e.g. https://push.internal/switchboard. Operator-chosen, so private addresses are fine. */
  url: string;
  /** Shared secret, at least 16 bytes. */
  secret: string;
  now?: () => number;
}

export interface WebhookBody {
  v: 1;
  id: string;
  token: string;
  urgency: Urgency;
  count?: number;
}

export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return "v1=" + createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

/** The receiver's half, exported so a gateway written in TypeScript does not reimplement it. */
export function verifyWebhook(
  secret: string,
  timestamp: string | null,
  signature: string | null,
  body: string,
  now: number,
  toleranceS = WEBHOOK_TOLERANCE_S,
): { ok: true } | { ok: false; reason: "malformed" | "stale" | "bad-signature" } {
  if (!timestamp || !signature || !/^\d+$/.test(timestamp)) return { ok: false, reason: "malformed" };
  if (Math.abs(now / 1000 - Number(timestamp)) > toleranceS) return { ok: false, reason: "stale" };
  const want = Buffer.from(webhookSignature(secret, timestamp, body));
  const got = Buffer.from(signature);
  return want.length === got.length && timingSafeEqual(want, got) ? { ok: true } : { ok: false, reason: "bad-signature" };
}

export class WebhookProvider implements PushProvider {
  readonly name = "webhook" as const;
  private now: () => number;

  constructor(private cfg: WebhookConfig) {
    if (!/^https?:\/\//.test(cfg.url)) throw new Error(`WebhookProvider: url must be http(s), got ${JSON.stringify(cfg.url)}`);
    if (typeof cfg.secret !== "string" || Buffer.byteLength(cfg.secret) < 16) throw new Error("WebhookProvider: secret must be at least 16 bytes");
    this.now = cfg.now ?? Date.now;
  }

  async send(job: PushJob, signal: AbortSignal): Promise<PushOutcome> {
    const t = job.target;
    if (t.provider !== "webhook") throw new Error(`WebhookProvider got a ${t.provider} job`);
    const msg: WebhookBody = { v: 1, id: job.id, token: t.token, urgency: job.urgency };
    if (job.count !== undefined) msg.count = job.count;
    const body = JSON.stringify(msg);
    const ts = String(Math.floor(this.now() / 1000));
    const headers = { "content-type": "application/json", [WEBHOOK_IDEMPOTENCY]: job.id, [WEBHOOK_TIMESTAMP]: ts, [WEBHOOK_SIGNATURE]: webhookSignature(this.cfg.secret, ts, body) };
    const a = await post(this.cfg.url, headers, body, signal);
    if (!isAnswer(a)) return a;
    return pushServiceOutcome(a, this.now());
  }

  async close(): Promise<void> {}
}

/**
 * What the HTTP-speaking providers share: Retry-After parsing, the retry
 * delay (backoff with jitter, never earlier than the provider asked), a POST
 * that never throws, and the outcome of the status codes every push service
 * means the same way.
 */
import type { PushOutcome } from "./types.ts";

/**
 * Retry-After in milliseconds from `now`: delay-seconds or an HTTP-date
 * (RFC 9110 §10.2.3). null when absent or unparseable; a date in the past is 0.
 */
export function parseRetryAfter(value: string | null | undefined, now: number): number | null {
  if (value == null) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}

export interface Backoff {
  baseMs: number;
  maxMs: number;
}

/**
 * Delay before attempt `attempt + 1` (attempt counts from 1). Exponential with
 * "equal jitter" (half fixed, half random) so jobs that failed together do not
 * come back together, and never less than the provider's Retry-After.
 */
export function retryDelay(attempt: number, afterMs: number | null, b: Backoff, random: () => number): number {
  const exp = Math.min(b.maxMs, b.baseMs * 2 ** Math.max(0, attempt - 1));
  const jittered = Math.round(exp / 2 + (random() * exp) / 2);
  return afterMs === null ? jittered : Math.max(afterMs, jittered);
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
}

/** Largest response body read; push services answer in a few hundred bytes. */
const MAX_ANSWER = 64 * 1024;

/**
 * POST that resolves to the answer, or to a retry outcome on a network
 * failure or abort (the sender's timeout). Redirects are not followed: a push
 * service never redirects, and following one is how SSRF gets in.
 */
export async function post(url: string, headers: Record<string, string>, body: string | Uint8Array, signal: AbortSignal): Promise<HttpAnswer | PushOutcome> {
  try {
    const res = await fetch(url, { method: "POST", headers, body, signal, redirect: "manual" });
    const text = (await res.text()).slice(0, MAX_ANSWER);
    return { status: res.status, headers: res.headers, text };
  } catch (e) {
    return { kind: "retry", reason: signal.aborted ? "timeout" : `network: ${errorText(e)}`, afterMs: null };
  }
}

export function isAnswer(a: HttpAnswer | PushOutcome): a is HttpAnswer {
  return (a as HttpAnswer).status !== undefined && (a as PushOutcome).kind === undefined;
}

export function errorText(e: unknown): string {
  const err = e as { code?: string; message?: string };
  return err?.code ?? err?.message ?? String(e);
}

/**
 * The statuses every provider means the same way: 429 and 5xx are "later"
 * (with the provider's Retry-After), 2xx is delivered. Anything else is the
 * provider's own to classify, so this returns null for it.
 */
export function commonOutcome(status: number, retryAfter: string | null, now: number, reason: string): PushOutcome | null {
  if (status >= 200 && status < 300) return { kind: "delivered", status };
  if (status === 429 || status >= 500) return { kind: "retry", reason, afterMs: parseRetryAfter(retryAfter, now), status };
  return null;
}

/** JSON.parse that answers null instead of throwing: provider error bodies are not always JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * The table of RFC 8030 push services (and of our webhook, which copies it):
 * 2xx delivered, 429/5xx later, 404/410 the subscription is gone (RFC 8030
 * §7.3; UnifiedPush says 404), anything else (400/401/403 VAPID trouble, 413,
 * a 3xx we do not follow) is not the subscription's fault and keeps it.
 */
export function pushServiceOutcome(a: HttpAnswer, now: number): PushOutcome {
  const reason = `HTTP ${a.status}`;
  const common = commonOutcome(a.status, a.headers.get("retry-after"), now, reason);
  if (common) return common;
  if (a.status === 404 || a.status === 410) return { kind: "invalid-token", reason, status: a.status };
  return { kind: "permanent", reason, status: a.status };
}

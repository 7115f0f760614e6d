/**
 * The provider layer's contract: what a push job is, what a provider answers,
 * and what the sender reports back to its caller.
 *
 * A push carries no content. `PushJob` has no field for the sender, the
 * conversation or the payload, and `pushJob()` copies only the fields below, so
 * an object that happens to carry more (a queue item, say) cannot leak it into
 * a provider's request: every provider builds its body from `urgency` and
 * `count` alone (test/push/content.test.ts captures every body to check this).
 */

export type ProviderName = "apns" | "fcm" | "webpush" | "webhook";

/**
 * silent: a background/data-only wake-up (APNs background, FCM NORMAL, Web Push
 * Urgency normal). alert: the visible stage (APNs alert + mutable-content so
 * the app decrypts on the device, FCM HIGH, Web Push Urgency high). ring: an
 * incoming call (PushService.ring), now or never: APNs VoIP to a PushKit token
 * (else an alert), FCM HIGH, Web Push high, each with no time to live. Only a
 * ring goes to a VoIP token: Apple ends an app that gets a VoIP push and
 * reports no call to CallKit, and stops its VoIP pushes after a few.
 */
export type Urgency = "silent" | "alert" | "ring";

/**
 * Where a device is reached. `registeredAt` (ms since epoch) is when this token
 * was registered or last refreshed; it rides through to the result so the
 * caller removes a token the provider calls invalid only if it was not
 * refreshed since (Signal's rule, see `shouldRemoveToken`).
 */
export type PushTarget =
  | { provider: "apns"; token: string; registeredAt: number; voip?: boolean }
  | { provider: "fcm"; token: string; registeredAt: number }
  | { provider: "webpush"; endpoint: string; p256dh: string; auth: string; registeredAt: number }
  | { provider: "webhook"; token: string; registeredAt: number };

export interface PushJob {
  /** Idempotency key: opaque, chosen by the caller (the durable job's key), never derived from a message. */
  readonly id: string;
  /** The caller's device key, for routing results and rate limits. Never sent to a provider. */
  readonly device: string;
  readonly target: PushTarget;
  readonly urgency: Urgency;
  /** Pending-message count (badge), if the caller wants one shown. */
  readonly count?: number;
}

/** Largest count a push may carry; APNs badges and FCM data values are fine far beyond this. */
export const MAX_COUNT = 1_000_000;

/**
 * Builds a frozen job from exactly the known fields (anything else on `input`
 * is dropped, not copied). Throws on misuse: these are our own callers' bugs.
 */
export function pushJob(input: PushJob): PushJob {
  const { id, device, urgency, count } = input;
  if (typeof id !== "string" || id.length === 0 || id.length > 128) throw new Error(`pushJob: id must be a string of 1..128 chars, got ${JSON.stringify(id)}`);
  if (typeof device !== "string" || device.length === 0) throw new Error("pushJob: device must be a non-empty string");
  if (urgency !== "silent" && urgency !== "alert" && urgency !== "ring") throw new Error(`pushJob: urgency must be "silent", "alert" or "ring", got ${JSON.stringify(urgency)}`);
  if (input.target?.provider === "apns" && input.target.voip === true && urgency !== "ring") {
    throw new Error("pushJob: a VoIP (PushKit) token takes rings only: a message wake-up goes to the device's regular endpoint");
  }
  if (count !== undefined && !(Number.isInteger(count) && count >= 0 && count <= MAX_COUNT)) {
    throw new Error(`pushJob: count must be an integer in 0..${MAX_COUNT}, got ${count}`);
  }
  const job: { -readonly [K in keyof PushJob]: PushJob[K] } = { id, device, target: copyTarget(input.target), urgency };
  if (count !== undefined) job.count = count;
  return Object.freeze(job);
}

function copyTarget(t: PushTarget): PushTarget {
  if (!t || typeof t !== "object") throw new Error("pushJob: target is required");
  if (!Number.isFinite(t.registeredAt)) throw new Error("pushJob: target.registeredAt must be a number (ms since epoch)");
  const str = (v: unknown, what: string): string => {
    if (typeof v !== "string" || v.length === 0) throw new Error(`pushJob: target.${what} must be a non-empty string`);
    return v;
  };
  switch (t.provider) {
    case "apns":
      return Object.freeze(t.voip ? { provider: "apns", token: str(t.token, "token"), registeredAt: t.registeredAt, voip: true } : { provider: "apns", token: str(t.token, "token"), registeredAt: t.registeredAt });
    case "fcm":
      return Object.freeze({ provider: "fcm", token: str(t.token, "token"), registeredAt: t.registeredAt });
    case "webhook":
      return Object.freeze({ provider: "webhook", token: str(t.token, "token"), registeredAt: t.registeredAt });
    case "webpush":
      return Object.freeze({ provider: "webpush", endpoint: str(t.endpoint, "endpoint"), p256dh: str(t.p256dh, "p256dh"), auth: str(t.auth, "auth"), registeredAt: t.registeredAt });
    default:
      throw new Error(`pushJob: unknown provider ${JSON.stringify((t as { provider: unknown }).provider)}`);
  }
}

/** What one attempt at one provider came to. `afterMs`: the provider's Retry-After, if it gave one. */
export type PushOutcome =
  | { kind: "delivered"; status: number }
  | { kind: "retry"; reason: string; afterMs: number | null; status?: number }
  | { kind: "invalid-token"; reason: string; status: number }
  | { kind: "permanent"; reason: string; status?: number };

/** One provider speaking its own protocol. `send` never throws for a provider's answer or a network failure. */
export interface PushProvider {
  readonly name: ProviderName;
  /** Resolves when the provider answered, or soon after `signal` aborts (the sender's per-request timeout). */
  send(job: PushJob, signal: AbortSignal): Promise<PushOutcome>;
  /** Closes pooled connections. */
  close(): Promise<void>;
}

/** What the sender hands back for a job it accepted: the final word of up to `maxAttempts` attempts. */
export type PushResult =
  | { kind: "delivered"; job: PushJob; attempts: number; status: number }
  /** Not delivered yet: the caller (the durable job) should try again at `at` (ms since epoch). */
  | { kind: "retry-later"; job: PushJob; attempts: number; at: number; reason: string }
  /**
   * The provider says this token is dead. Remove it unless it was refreshed
   * after `tokenRegisteredAt` (see `shouldRemoveToken`).
   */
  | { kind: "invalid-token"; job: PushJob; attempts: number; reason: string; tokenRegisteredAt: number; invalidatedAt: number }
  | { kind: "permanent"; job: PushJob; attempts: number; reason: string };

/**
 * Signal's token hygiene: a token the provider called invalid is removed only
 * if the stored registration is still the one that was pushed to, i.e. the
 * device has not re-registered (a fresh token, or the same token again) since.
 */
export function shouldRemoveToken(result: Extract<PushResult, { kind: "invalid-token" }>, stored: { registeredAt: number }): boolean {
  return stored.registeredAt <= result.tokenRegisteredAt;
}

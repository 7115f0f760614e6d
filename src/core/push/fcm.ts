/**
 * FCM HTTP v1 (`POST /v1/projects/{id}/messages:send`), authorised by an
 * OAuth2 access token that a service account obtains with a signed JWT
 * assertion (RFC 7523; RS256, aud = the token endpoint, scope
 * firebase.messaging). The token is cached until a minute before it expires,
 * and concurrent sends share one exchange, so a burst costs one token request.
 */
import type { KeyObject } from "node:crypto";
import { privateKeyFromPem, signJwt } from "./jwt.ts";
import { commonOutcome, isAnswer, parseJson, post, type HttpAnswer } from "./http.ts";
import type { PushJob, PushOutcome, PushProvider } from "./types.ts";

/** The fields of a Google service-account JSON key file that matter here. */
export interface ServiceAccount {
  project_id: string;
  client_email: string;
  private_key: string;
  token_uri?: string;
}

export interface FcmConfig {
  serviceAccount: ServiceAccount;
  /** Default https://fcm.googleapis.com. */
  baseUrl?: string;
  /** Default the key file's token_uri, else https://oauth2.googleapis.com/token. */
  tokenUrl?: string;
  /** android.ttl. Default 28 days (Signal's, FCM's maximum). */
  ttlSeconds?: number;
  /** android.collapse_key: one pending wake-up per device. Default "sb". */
  collapseKey?: string;
  now?: () => number;
}

export const FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging";
/** Refresh this long before the token's stated expiry, so a send never carries a token that dies in flight. */
const EXPIRY_MARGIN_MS = 60_000;

type Token = { value: string; expiresAt: number };

export class FcmProvider implements PushProvider {
  readonly name = "fcm" as const;
  private key: KeyObject;
  private token: Token | null = null;
  private pending: Promise<Token | PushOutcome> | null = null;
  private now: () => number;
  private sendUrl: string;
  private tokenUrl: string;
  /** Access tokens fetched so far: a test (and later a metric) checks that the cache works. */
  tokenExchanges = 0;

  constructor(private cfg: FcmConfig) {
    const sa = cfg.serviceAccount;
    if (!sa?.project_id || !sa.client_email) throw new Error("FcmProvider: serviceAccount needs project_id and client_email (the JSON key file's contents)");
    this.key = privateKeyFromPem(sa.private_key, "FcmProvider serviceAccount.private_key");
    this.now = cfg.now ?? Date.now;
    this.sendUrl = `${cfg.baseUrl ?? "https://fcm.googleapis.com"}/v1/projects/${encodeURIComponent(sa.project_id)}/messages:send`;
    this.tokenUrl = cfg.tokenUrl ?? sa.token_uri ?? "https://oauth2.googleapis.com/token";
  }

  private accessToken(signal: AbortSignal): Promise<Token | PushOutcome> {
    if (this.token && this.now() < this.token.expiresAt - EXPIRY_MARGIN_MS) return Promise.resolve(this.token);
    this.pending ??= this.exchange(signal).finally(() => (this.pending = null));
    return this.pending;
  }

  private async exchange(signal: AbortSignal): Promise<Token | PushOutcome> {
    const iat = Math.floor(this.now() / 1000);
    const assertion = signJwt(
      "RS256",
      { typ: "JWT" },
      { iss: this.cfg.serviceAccount.client_email, scope: FCM_SCOPE, aud: this.tokenUrl, iat, exp: iat + 3600 },
      this.key,
    );
    const form = new URLSearchParams({ grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer", assertion }).toString();
    this.tokenExchanges++;
    const a = await post(this.tokenUrl, { "content-type": "application/x-www-form-urlencoded" }, form, signal);
    if (!isAnswer(a)) return a;
    const common = commonOutcome(a.status, a.headers.get("retry-after"), this.now(), `oauth: HTTP ${a.status}`);
    if (common && common.kind !== "delivered") return common;
    const j = parseJson(a.text) as { access_token?: unknown; expires_in?: unknown; error?: unknown } | null;
    if (a.status !== 200 || typeof j?.access_token !== "string") {
      // invalid_grant and friends: the key is revoked or the clock is off; retrying the same assertion will not help.
      return { kind: "permanent", reason: `oauth: ${String(j?.error ?? `HTTP ${a.status}`)}`, status: a.status };
    }
    const ttl = typeof j.expires_in === "number" ? j.expires_in : 3600;
    this.token = { value: j.access_token, expiresAt: this.now() + ttl * 1000 };
    return this.token;
  }

  async send(job: PushJob, signal: AbortSignal): Promise<PushOutcome> {
    const t = job.target;
    if (t.provider !== "fcm") throw new Error(`FcmProvider got a ${t.provider} job`);
    const tok = await this.accessToken(signal);
    if ("kind" in tok) return tok;
    const a = await post(this.sendUrl, { authorization: `Bearer ${tok.value}`, "content-type": "application/json" }, JSON.stringify(fcmBody(job, t.token, this.cfg)), signal);
    if (!isAnswer(a)) return a;
    return this.classify(a);
  }

  /** Firebase's error table (FCM v1 ErrorCode); the token is blamed only when FCM says it was the token. */
  private classify(a: HttpAnswer): PushOutcome {
    const err = (parseJson(a.text) as { error?: FcmError } | null)?.error;
    const code = fcmErrorCode(err);
    const reason = code ?? err?.status ?? `HTTP ${a.status}`;
    const common = commonOutcome(a.status, a.headers.get("retry-after"), this.now(), reason);
    if (common) return common;
    if (a.status === 404 || code === "UNREGISTERED") return { kind: "invalid-token", reason: "UNREGISTERED", status: a.status };
    if (a.status === 400 && blamesToken(err)) return { kind: "invalid-token", reason: "INVALID_ARGUMENT (token)", status: a.status };
    if (a.status === 401) {
      this.token = null; // revoked or expired early: fetch a new one, then try again at once
      return { kind: "retry", reason: "UNAUTHENTICATED", afterMs: 0, status: 401 };
    }
    // SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, other INVALID_ARGUMENTs: configuration, not the device.
    return { kind: "permanent", reason, status: a.status };
  }

  async close(): Promise<void> {}
}

interface FcmError {
  code?: number;
  status?: string;
  message?: string;
  details?: { "@type"?: string; errorCode?: string; fieldViolations?: { field?: string }[] }[];
}

function fcmErrorCode(err: FcmError | undefined): string | undefined {
  return err?.details?.find((d) => typeof d.errorCode === "string")?.errorCode;
}

/** A 400 is about the token when a field violation names message.token (FCM's google.rpc.BadRequest detail). */
function blamesToken(err: FcmError | undefined): boolean {
  return err?.details?.some((d) => d.fieldViolations?.some((v) => v.field === "message.token")) ?? false;
}

/**
 * The whole message: the token and a data-only wake-up (`sb: "1"`, plus `n`
 * the count). Data-only, as Signal does, so the app fetches and decrypts;
 * HIGH for the alert stage, which Android only keeps honouring if the app then
 * shows a notification (FCM's deprioritisation rule). A ring: HIGH, `ring: "1"`,
 * ttl 0 (now or never) and no collapse key (it must not replace a pending wake-up).
 */
export function fcmBody(job: PushJob, token: string, cfg: Pick<FcmConfig, "ttlSeconds" | "collapseKey">): unknown {
  if (job.urgency === "ring") return { message: { token, data: { sb: "1", ring: "1" }, android: { priority: "HIGH", ttl: "0s" } } };
  const data: Record<string, string> = { sb: "1" };
  if (job.count !== undefined) data.n = String(job.count);
  return {
    message: {
      token,
      data,
      android: { priority: job.urgency === "alert" ? "HIGH" : "NORMAL", ttl: `${cfg.ttlSeconds ?? 28 * 86400}s`, collapse_key: cfg.collapseKey ?? "sb" },
    },
  };
}

/**
 * The attachment scheme's shapes and sizes, with no node:* import (docs/E2E.md
 * §12): what the Node/Bun streaming code (media.ts, media-download.ts) and the
 * in-memory code on an AsyncCryptoProvider (media-web.ts: browsers) share.
 */

export const KEY_BYTES = 64;
export const IV_BYTES = 16;
export const MAC_BYTES = 32;
const BLOCK = 16;
/** Signal's smallest bucket: anything up to 541 bytes looks the same. */
const MIN_PADDED = 541;

/** What the recipients get inside the end-to-end encrypted message (`{att: ...}`, docs/E2E.md). */
export interface Attachment {
  id: string;
  /** Where the blob is (the uploader's server's HTTP port): `GET` it, no credentials (the id is the capability). */
  url: string;
  /** 64 bytes, base64: AES-256 key || HMAC-SHA256 key. */
  key: string;
  /** SHA-256 of the whole blob, base64. */
  digest: string;
  /** Bytes of plaintext. */
  size: number;
  /** MIME type, e.g. `image/jpeg` (`application/octet-stream` when unknown). */
  type: string;
  /** The file name the sender gave (never a path: see `safeFileName` before saving under it). */
  name?: string;
}

export interface Progress {
  phase: "encrypt" | "upload" | "download" | "decrypt";
  /** Bytes done of `total` in this phase (upload and download count blob bytes, encrypt and decrypt plaintext). */
  done: number;
  total: number;
}

/**
 * A refusal or failure of an attachment transfer. `code`: the server's (`too_large`, `quota`, ... from
 * `media.upload`, or the `error` of an HTTP refusal body), or the SDK's: `bad_digest`, `bad_mac`, `bad_length`,
 * `bad_padding`, `gone` (410: expired or deleted), `not_found` (404), `file_changed`, `unreachable`, `tls` (the
 * certificate of an https:// blob URL does not verify: MediaTls).
 */
export class MediaError extends Error {
  constructor(readonly code: string, message: string, readonly detail?: unknown) {
    super(message);
    this.name = "MediaError";
  }
}

// ---- sizes -------------------------------------------------------------------------------------------

/** Signal's size bucket: max(541, floor(1.05^ceil(log(size)/log(1.05)))); never below `size`. */
export function paddedSize(size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`paddedSize: ${size} is not a byte count`);
  const p = Math.max(MIN_PADDED, Math.floor(Math.pow(1.05, Math.ceil(Math.log(size) / Math.log(1.05)))));
  return Math.max(p, size); // floating point must never cut the plaintext
}

/** Bytes of the blob of a `size`-byte plaintext: IV, the padded plaintext with PKCS7 (always 1..16 bytes), MAC. */
export function blobSize(size: number): number {
  return IV_BYTES + (Math.floor(paddedSize(size) / BLOCK) + 1) * BLOCK + MAC_BYTES;
}

/**
 * The largest plaintext whose blob fits in `maxBlob` bytes (a server's `media.max_file` counts encrypted bytes):
 * 102 224 512 bytes (97.5 MiB) for the default 100 MiB, since padding to the next bucket would pass it.
 */
export function largestFile(maxBlob: number): number {
  if (blobSize(0) > maxBlob) return -1;
  let lo = 0;
  let hi = maxBlob; // blobSize(n) > n, so the answer is below maxBlob
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (blobSize(mid) <= maxBlob) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export function keyParts(key: Uint8Array): { aes: Uint8Array; mac: Uint8Array } {
  if (key.length !== KEY_BYTES) throw new Error(`attachment key: ${key.length} bytes, expected ${KEY_BYTES}`);
  return { aes: key.subarray(0, 32), mac: key.subarray(32) };
}

/** The server's answer to `media.upload` (the contract: docs/PROTOCOL.md). */
export interface Slot {
  id: string;
  url: string;
  tok: string;
  exp: number;
  max: number;
}

export type Request = <T = unknown>(op: string, args?: Record<string, unknown>) => Promise<T>;

export interface UploadOptions {
  /** MIME type (default application/octet-stream). */
  type?: string;
  /** File name for the recipients (default: the path's last component; none for a stream). */
  name?: string;
  onProgress?: (p: Progress) => void;
  /** Bytes per PATCH request (default 4 MiB): the most the upload holds in memory. */
  chunkBytes?: number;
  /** Give up when no byte could be uploaded for this long across retries (default 60 000 ms). */
  stallMs?: number;
  /**
   * Recipient devices that will download the blob (`media.upload {n}`): a server with
   * media.delete_after_download deletes it after that many whole downloads. Default: not told (kept for the retention).
   */
  recipients?: number;
  /** TLS for an https:// upload URL (MediaTls). SecureClient: its client's `tls` by default. */
  tls?: MediaTls;
}

/**
 * TLS for the blob URLs (https://, the server's http.tls_port or media.public_url), with the meaning of the protocol
 * connection's ConnectOptions.tls: `ca` is trusted (a private CA, the server's development certificate),
 * `rejectUnauthorized: false` accepts any certificate. `serverName`, the name the certificate is checked against
 * instead of the host connected to, applies to a URL of `host` only (the host the protocol connection names): a
 * blob URL of another host is checked against its own name. SecureClient fills it from its client's options
 * (`mediaTls`). Bun's fetch takes it; a browser's fetch ignores it (the page's trust store decides).
 */
export interface MediaTls {
  ca?: string;
  rejectUnauthorized?: boolean;
  serverName?: string;
  host?: string;
}

/** The media TLS that follows a client's connection options (ConnectOptions host, url, tls); undefined for `tls` true or unset: fetch's defaults. */
export function mediaTls(o: { host: string; url?: string; tls?: boolean | { ca?: string; serverName?: string; rejectUnauthorized?: boolean } }): MediaTls | undefined {
  if (typeof o.tls !== "object") return undefined;
  let host = o.host;
  if (o.url !== undefined) {
    try {
      host = new URL(o.url).hostname;
    } catch {
      // the connection refuses the URL itself; its host is what names the server then
    }
  }
  return { ...o.tls, host };
}

/** fetch's `tls` (Bun's RequestInit extension) for a transfer to `url`: none for http:// or no options. */
export function fetchTls(tls: MediaTls | undefined, url: string): { tls?: { ca?: string; rejectUnauthorized?: boolean; serverName?: string } } {
  if (tls === undefined || !/^https:/i.test(url)) return {};
  const t: { ca?: string; rejectUnauthorized?: boolean; serverName?: string } = {};
  if (tls.ca !== undefined) t.ca = tls.ca;
  if (tls.rejectUnauthorized !== undefined) t.rejectUnauthorized = tls.rejectUnauthorized;
  if (tls.serverName !== undefined && tls.host !== undefined && new URL(url).hostname === tls.host) t.serverName = tls.serverName;
  return { tls: t };
}

/** Error codes of a certificate that does not verify (Bun's fetch, as node:tls names them). */
const UNTRUSTED = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ALTNAME|HOSTNAME/;

/**
 * What a fetch that threw means: a certificate that does not verify is a MediaError `tls` at once (waiting does not
 * change it; before, it was retried until the stall limit and reported `unreachable`), anything else a Retry.
 */
export function fetchFailed(e: Error & { code?: unknown }, what: string): Error {
  if (typeof e.code === "string" && UNTRUSTED.test(e.code)) {
    return new MediaError("tls", `${what}: the server's certificate does not verify (${e.code}); for a private CA or a development certificate give the client's tls option { ca } (or the transfer's opts.tls)`);
  }
  return new Retry(`${what}: ${e.message}`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A failure worth retrying after a pause: the connection, the server restarting, 409, 429, 5xx. */
export class Retry extends Error {
  constructor(message: string, readonly waitMs?: number) {
    super(message);
  }
}

/** The JSON body of an HTTP refusal (`{error, limit?, retry_after_ms?}`), or null. */
export async function refusal(r: Response): Promise<{ error?: string; limit?: unknown; retry_after_ms?: number } | null> {
  try {
    return (await r.json()) as { error?: string };
  } catch {
    return null;
  }
}

export function retryAfterMs(r: Response, body: { retry_after_ms?: number } | null): number {
  if (typeof body?.retry_after_ms === "number") return body.retry_after_ms;
  const s = Number(r.headers.get("retry-after"));
  return Number.isFinite(s) && s >= 0 ? s * 1000 : 1000;
}

/** What a tus PATCH answered other than 204 means: a Retry (409, 429, 5xx: ask HEAD and go on), or the MediaError to fail with. */
export async function patchRefused(r: Response, offset: number): Promise<Error> {
  const body = await refusal(r);
  if (r.status === 409) return new Retry(`upload: offset ${offset} is not the server's`);
  if (r.status === 429) return new Retry(`upload: rate limited (${body?.error ?? "429"})`, retryAfterMs(r, body));
  if (r.status >= 500) return new Retry(`upload: server error ${r.status}`);
  if (r.status === 410) return new MediaError("expired", "the upload capability expired before the upload finished", body);
  return new MediaError(body?.error ?? `http_${r.status}`, `upload refused by the server: HTTP ${r.status}${body?.error ? ` ${body.error}` : ""}`, body);
}

/** Checks an attachment descriptor from a message (anyone could have written it): null when it is not one. */
export function parseAttachment(v: unknown): Attachment | null {
  if (typeof v !== "object" || v === null) return null;
  const a = v as Record<string, unknown>;
  if (typeof a.id !== "string" || !/^[A-Za-z0-9_-]{16,128}$/.test(a.id)) return null;
  if (typeof a.url !== "string" || !/^https?:\/\//i.test(a.url)) return null;
  try {
    new URL(a.url);
  } catch {
    return null;
  }
  if (typeof a.key !== "string" || fromBase64(a.key)?.length !== KEY_BYTES) return null;
  if (typeof a.digest !== "string" || fromBase64(a.digest)?.length !== 32) return null;
  if (typeof a.size !== "number" || !Number.isSafeInteger(a.size) || a.size < 0) return null;
  if (typeof a.type !== "string" || a.type.length > 255) return null;
  if (a.name !== undefined && (typeof a.name !== "string" || a.name.length > 1024)) return null;
  const att: Attachment = { id: a.id, url: a.url, key: a.key, digest: a.digest, size: a.size, type: a.type };
  if (a.name !== undefined) att.name = a.name as string;
  return att;
}

/**
 * A name to save an attachment under inside a folder: the last component of what the sender wrote, without
 * control characters, separators or a leading dot (a sender must not choose `../../.bashrc`); a made-up one
 * when nothing is left.
 */
export function safeFileName(att: Pick<Attachment, "id" | "name" | "type">): string {
  let n = (att.name ?? "").split(/[\\/]/).pop() ?? "";
  n = n.replace(/[\u0000-\u001f\u007f]/g, "").replace(/^[.\s]+/, "").trim().slice(0, 200);
  return n || `attachment-${att.id.slice(0, 8)}`;
}

export interface DownloadOptions {
  onProgress?: (p: Progress) => void;
  /** Give up when no byte could be downloaded for this long across retries (default 60 000 ms). */
  stallMs?: number;
  /** TLS for an https:// blob URL (MediaTls). SecureClient: its client's `tls` by default. */
  tls?: MediaTls;
}

/** Bytes of base64 (standard alphabet), or null when it is not base64. */
export function fromBase64(s: string): Uint8Array | null {
  try {
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

export function toBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

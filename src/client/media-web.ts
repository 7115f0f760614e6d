/**
 * Attachments in memory, on an AsyncCryptoProvider (docs/E2E.md §12): the
 * same scheme and wire as media.ts and media-download.ts (AES-256-CBC +
 * HMAC-SHA256, Signal's padding buckets, tus upload, GET download), for bytes
 * in hand rather than files, with no node:* import: what a page uses
 * (WebCrypto has AES-CBC and HMAC), and what SecureClient uses anywhere for a
 * Uint8Array or a Blob. A blob made here downloads with media-download.ts and
 * the other way round (test/wire/media-web.test.ts).
 *
 * Memory: the plaintext, the blob and one copy while encrypting; a page that
 * sends a 100 MiB file holds about 300 MiB for the moment of the upload. The
 * streaming code (media.ts) is for Bun and Node.
 */
import type { E2ECrypto } from "./crypto/primitives.ts";
import { concat } from "./crypto/bytes.ts";
import {
  blobSize, fetchFailed, fetchTls, fromBase64, IV_BYTES, KEY_BYTES, keyParts, largestFile, MAC_BYTES, MediaError, paddedSize, parseAttachment, patchRefused, refusal, Retry, retryAfterMs, sleep, toBase64,
  type Attachment, type MediaTls, type Request, type Slot, type UploadOptions,
} from "./media-format.ts";

/** The blob of `plaintext` under `key` (64 bytes) and `iv`: IV || AES-256-CBC(plaintext || zeros, PKCS7) || HMAC-SHA256(iv || ct). */
export async function sealBlob(cx: E2ECrypto, plaintext: Uint8Array, key: Uint8Array, iv: Uint8Array): Promise<{ blob: Uint8Array; digest: Uint8Array }> {
  const { aes, mac } = keyParts(key);
  const padded = new Uint8Array(paddedSize(plaintext.length));
  padded.set(plaintext, 0);
  const ct = await cx.aesCbcEncrypt(aes, iv, padded);
  const body = concat(iv, ct);
  const blob = concat(body, await cx.hmacSha256(mac, body));
  return { blob, digest: await cx.sha256(blob) };
}

/** The plaintext of a blob, after its length, digest and MAC are checked (a MediaError otherwise). */
export async function openBlob(cx: E2ECrypto, att: Attachment, blob: Uint8Array): Promise<Uint8Array> {
  const key = fromBase64(att.key)!;
  const { aes, mac } = keyParts(key);
  const total = blobSize(att.size);
  if (blob.length !== total) throw new MediaError("bad_length", `attachment ${att.id}: the server sent ${blob.length} bytes, the attachment has ${total}`);
  if (!cx.equalBytes(await cx.sha256(blob), fromBase64(att.digest)!)) throw new MediaError("bad_digest", `attachment ${att.id}: the blob is not the one the sender uploaded (digest)`);
  const body = blob.subarray(0, total - MAC_BYTES);
  if (!cx.equalBytes(await cx.hmacSha256(mac, body), blob.subarray(total - MAC_BYTES))) throw new MediaError("bad_mac", `attachment ${att.id}: the MAC does not verify`);
  const padded = await cx.aesCbcDecrypt(aes, body.subarray(0, IV_BYTES), body.subarray(IV_BYTES));
  if (!padded) throw new MediaError("bad_padding", `attachment ${att.id}: the last block's padding is wrong`);
  if (padded.length !== paddedSize(att.size)) throw new MediaError("bad_padding", `attachment ${att.id}: ${padded.length} bytes of padded plaintext, expected ${paddedSize(att.size)}`);
  for (let i = att.size; i < padded.length; i++) if (padded[i] !== 0) throw new MediaError("bad_padding", `attachment ${att.id}: the padding is not zeros`);
  return padded.subarray(0, att.size);
}

/** Encrypts `data` under a fresh key and uploads it (tus, resumed from the server's offset); resolves with what the recipients need. */
export async function uploadBytes(cx: E2ECrypto, request: Request, data: Uint8Array, opts: UploadOptions = {}): Promise<Attachment> {
  const key = cx.randomBytes(KEY_BYTES);
  const { blob, digest } = await sealBlob(cx, data, key, cx.randomBytes(IV_BYTES));
  opts.onProgress?.({ phase: "encrypt", done: data.length, total: data.length });
  for (let fresh = 0; ; fresh++) {
    const slot = await request<Slot>("media.upload", opts.recipients ? { size: blob.length, n: opts.recipients } : { size: blob.length }).catch((e: { code?: string; detail?: { max?: number } }) => {
      const max = e.detail?.max;
      if (e.code !== "too_large" || typeof max !== "number") throw e;
      throw new MediaError("too_large", `${opts.name ?? "the file"} is too large for this server: ${data.length} bytes are ${blob.length} once padded and encrypted, the server takes blobs of at most ${max} bytes: files of at most ${largestFile(max)} bytes`, e.detail);
    });
    try {
      await patchAll(slot, blob, opts);
    } catch (e) {
      if (e instanceof MediaError && e.code === "expired" && fresh === 0) continue; // a slow upload outlived its capability: once more
      throw e;
    }
    const att: Attachment = { id: slot.id, url: slot.url, key: toBase64(key), digest: toBase64(digest), size: data.length, type: opts.type ?? "application/octet-stream" };
    if (opts.name) att.name = opts.name;
    return att;
  }
}

/** tus: PATCHes of `chunkBytes` from the server's offset until it has the whole blob; after a failure, HEAD says where it is. */
async function patchAll(slot: Slot, blob: Uint8Array, opts: UploadOptions): Promise<void> {
  const chunk = opts.chunkBytes ?? 4 << 20;
  const stallMs = opts.stallMs ?? 60_000;
  const auth = { "Tus-Resumable": "1.0.0", Authorization: `Bearer ${slot.tok}` };
  const tls = fetchTls(opts.tls, slot.url);
  let offset = 0;
  let last = Date.now();
  let pause = 100;
  while (offset < blob.length) {
    try {
      const r = await fetch(slot.url, {
        method: "PATCH",
        headers: { ...auth, "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(offset) },
        body: blob.slice(offset, Math.min(blob.length, offset + chunk)),
        ...tls,
      }).catch((e: Error) => {
        throw fetchFailed(e, "upload");
      });
      if (r.status === 204) {
        const next = Number(r.headers.get("upload-offset"));
        if (!Number.isSafeInteger(next) || next < offset || next > blob.length) throw new Retry(`upload: the server answered offset ${r.headers.get("upload-offset")}`);
        if (next > offset) (last = Date.now()), (pause = 100);
        offset = next;
        opts.onProgress?.({ phase: "upload", done: offset, total: blob.length });
        continue;
      }
      throw await patchRefused(r, offset);
    } catch (e) {
      if (!(e instanceof Retry)) throw e;
      if (Date.now() - last > stallMs) throw new MediaError("unreachable", `upload of ${slot.id} made no progress for ${stallMs} ms (${e.message})`);
      await sleep(e.waitMs ?? pause);
      pause = Math.min(pause * 2, 5000);
      const h = await fetch(slot.url, { method: "HEAD", headers: auth, ...tls }).catch(() => null);
      if (!h || h.status >= 500 || h.status === 429) continue;
      if (h.status === 410) throw new MediaError("expired", "the upload capability expired before the upload finished");
      const at = Number(h.headers.get("upload-offset"));
      if (h.status !== 200 || !Number.isSafeInteger(at) || at < 0 || at > blob.length) throw new MediaError("bad_offset", `the server's Upload-Offset is ${h.headers.get("upload-offset")} (HTTP ${h.status})`);
      offset = at;
    }
  }
}

/** Downloads `att` into memory and returns its plaintext, once length, digest and MAC are checked (a MediaError otherwise). */
export async function fetchBytes(cx: E2ECrypto, att: Attachment, opts: { stallMs?: number; tls?: MediaTls } = {}): Promise<Uint8Array> {
  const a = parseAttachment(att);
  if (!a) throw new Error("fetchAttachment: not an attachment descriptor (id, url, key, digest, size, type); use what the attachment event gave");
  const stallMs = opts.stallMs ?? 60_000;
  const start = Date.now();
  const tls = fetchTls(opts.tls, a.url);
  for (let pause = 100; ; pause = Math.min(pause * 2, 5000)) {
    try {
      const r = await fetch(a.url, tls).catch((e: Error) => {
        throw fetchFailed(e, "download");
      });
      if (r.status === 404) throw new MediaError("not_found", `attachment ${a.id}: the server has no such blob (never uploaded, or not finished)`);
      if (r.status === 410) throw new MediaError("gone", `attachment ${a.id}: expired or deleted on the server`);
      if (r.status === 429) throw new Retry("download: rate limited", retryAfterMs(r, await refusal(r)));
      if (r.status >= 500) throw new Retry(`download: server error ${r.status}`);
      if (r.status !== 200) throw new MediaError(`http_${r.status}`, `attachment ${a.id}: HTTP ${r.status}`);
      return await openBlob(cx, a, new Uint8Array(await r.arrayBuffer()));
    } catch (e) {
      if (!(e instanceof Retry)) throw e;
      if (Date.now() - start > stallMs) throw new MediaError("unreachable", `download of ${a.id} failed for ${stallMs} ms (${e.message})`);
      await sleep(e.waitMs ?? pause);
    }
  }
}

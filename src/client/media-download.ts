/**
 * Attachments, the download half (docs/E2E.md §12.3): a descriptor from a
 * message checked (`parseAttachment`), a safe name to save it under, and the
 * download itself: the blob into `<dest>.part` (resumed with Range), its
 * length, digest and MAC checked BEFORE any plaintext is written, then
 * decrypted into `<dest>.tmp`, fsynced and renamed. The scheme and the upload
 * are src/client/media.ts.
 */
import { createDecipheriv, createHash, createHmac, timingSafeEqual } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rename, rm, stat } from "node:fs/promises";
import {
  blobSize, IV_BYTES, KEY_BYTES, keyParts, MAC_BYTES, MediaError, paddedSize, READ_BYTES, readFile, refusal, Retry, retryAfterMs, sleep, writeAll,
  type Attachment, type Progress,
} from "./media.ts";
import { fetchFailed, fetchTls, parseAttachment, type DownloadOptions } from "./media-format.ts";

export { parseAttachment, safeFileName, type DownloadOptions } from "./media-format.ts";


/**
 * Downloads `att` and writes its plaintext to `dest` (replaced atomically), after checking the blob's length,
 * digest and MAC: a blob that fails a check is deleted and the promise rejects with a MediaError (`bad_digest`,
 * `bad_mac`, ...); nothing is written to `dest` then. A dropped connection resumes with Range; the ciphertext
 * received so far stays in `<dest>.part` when the download fails otherwise, and a later call resumes from it.
 */
export async function downloadAttachment(att: Attachment, dest: string, opts: DownloadOptions = {}): Promise<{ path: string; size: number }> {
  const a = parseAttachment(att);
  if (!a) throw new Error("downloadAttachment: not an attachment descriptor (id, url, key, digest, size, type); use what the message event gave");
  const key = new Uint8Array(Buffer.from(a.key, "base64"));
  const { aes, mac } = keyParts(key);
  const total = blobSize(a.size);
  const part = `${dest}.part`;
  const tmp = `${dest}.tmp`;
  const sha = createHash("sha256");
  const hmac = createHmac("sha256", mac);
  const tag = new Uint8Array(MAC_BYTES);
  let have = 0;
  /** Feeds received blob bytes at position `have` to the hashes (the last 32 are the MAC, kept aside). */
  const feed = (b: Uint8Array) => {
    sha.update(b);
    const macStart = total - MAC_BYTES;
    const body = b.subarray(0, Math.max(0, Math.min(b.length, macStart - have)));
    if (body.length) hmac.update(body);
    for (let i = body.length; i < b.length; i++) tag[have + i - macStart] = b[i]!;
    have += b.length;
  };
  // A part from an earlier call: its bytes are fed again (the hash states were not kept).
  const prior = await stat(part).catch(() => null);
  if (prior && prior.size > total) await rm(part, { force: true });
  else if (prior) for await (const b of readFile(part)) feed(b);

  const fh = await open(part, "a", 0o600);
  try {
    await fetchInto(a, total, () => have, feed, (b) => writeAll(fh, b), opts);
  } catch (e) {
    await fh.close();
    throw e;
  }
  await fh.close();

  const refuse = async (code: string, why: string): Promise<never> => {
    await rm(part, { force: true });
    throw new MediaError(code, `attachment ${a.id}: ${why}; nothing was saved`);
  };
  if (have !== total) return refuse("bad_length", `the server sent ${have} bytes, the attachment has ${total}`);
  const digest = sha.digest();
  if (!timingSafeEqual(digest, Buffer.from(a.digest, "base64"))) return refuse("bad_digest", "the downloaded blob does not match its digest (changed on the server or on the way)");
  if (!timingSafeEqual(hmac.digest(), tag)) return refuse("bad_mac", "the blob's MAC does not verify (not made with this attachment's key)");

  // Verified: decrypt into tmp, then rename.
  const iv = new Uint8Array(IV_BYTES);
  const ivFh = await open(part, "r");
  try {
    await ivFh.read(iv, 0, IV_BYTES, 0);
  } finally {
    await ivFh.close();
  }
  const decipher = createDecipheriv("aes-256-cbc", aes, iv);
  const out = await open(tmp, "w", 0o600);
  let plain = 0; // plaintext bytes decrypted (padding included)
  let written = 0;
  try {
    const put = async (b: Uint8Array) => {
      const keep = Math.max(0, Math.min(b.length, a.size - written));
      if (keep) await writeAll(out, b.subarray(0, keep));
      written += keep;
      for (let i = keep; i < b.length; i++) if (b[i] !== 0) throw new MediaError("bad_padding", `attachment ${a.id}: the padding is not zeros; nothing was saved`);
      plain += b.length;
    };
    const body = createReadStream(part, { start: IV_BYTES, end: total - MAC_BYTES - 1, highWaterMark: READ_BYTES });
    for await (const b of body as AsyncIterable<Uint8Array>) {
      await put(decipher.update(b));
      opts.onProgress?.({ phase: "decrypt", done: written, total: a.size });
    }
    try {
      await put(decipher.final());
    } catch (e) {
      if (e instanceof MediaError) throw e;
      throw new MediaError("bad_padding", `attachment ${a.id}: the last block's padding is wrong; nothing was saved`);
    }
    if (plain !== paddedSize(a.size)) throw new MediaError("bad_padding", `attachment ${a.id}: ${plain} bytes of padded plaintext, expected ${paddedSize(a.size)}; nothing was saved`);
    await out.sync();
  } catch (e) {
    await out.close();
    await rm(tmp, { force: true });
    await rm(part, { force: true });
    throw e;
  }
  await out.close();
  await rename(tmp, dest);
  await rm(part, { force: true });
  return { path: dest, size: a.size };
}

/**
 * GETs the blob from position have() on into the part file, resuming with Range after a failure, until it has
 * `total` bytes (or the server says it has no more).
 */
async function fetchInto(
  a: Attachment,
  total: number,
  have: () => number,
  feed: (b: Uint8Array) => void,
  write: (b: Uint8Array) => Promise<void>,
  opts: DownloadOptions,
): Promise<void> {
  const stallMs = opts.stallMs ?? 60_000;
  let lastProgress = Date.now();
  let pause = 100;
  const tls = fetchTls(opts.tls, a.url);
  while (have() < total) {
    try {
      const at = have();
      const r = await fetch(a.url, at > 0 ? { headers: { Range: `bytes=${at}-` }, ...tls } : tls).catch((e: Error) => {
        throw fetchFailed(e, "download");
      });
      if (r.status === 404) throw new MediaError("not_found", `attachment ${a.id}: the server has no such blob (never uploaded, or not finished)`);
      if (r.status === 410) throw new MediaError("gone", `attachment ${a.id}: expired or deleted on the server`);
      if (r.status === 429) throw new Retry("download: rate limited", retryAfterMs(r, await refusal(r)));
      if (r.status === 416 && at >= total) break;
      if (r.status >= 500) throw new Retry(`download: server error ${r.status}`);
      if (r.status !== 200 && r.status !== 206) {
        const body = await refusal(r);
        throw new MediaError(body?.error ?? `http_${r.status}`, `attachment ${a.id}: download refused: HTTP ${r.status}`, body);
      }
      // A server that ignores Range sends the whole blob: the bytes we have already are skipped (the blob never changes).
      let skip = at > 0 && r.status === 200 ? at : 0;
      if (r.status === 206) {
        const start = Number(/bytes (\d+)-/.exec(r.headers.get("content-range") ?? "")?.[1]);
        if (start !== at) {
          await r.body?.cancel();
          throw new MediaError("bad_range", `attachment ${a.id}: asked for bytes from ${at}, the server sent from ${r.headers.get("content-range")}`);
        }
      }
      if (!r.body) throw new Retry("download: empty response");
      const reader = r.body.getReader();
      try {
        for (;;) {
          const { value: chunk, done } = await reader.read().catch((e: Error) => {
            throw new Retry(`download: ${e.message}`);
          });
          if (done) break;
          let value = chunk;
          if (skip > 0) {
            const n = Math.min(skip, value.length);
            skip -= n;
            value = value.subarray(n);
            if (value.length === 0) continue;
          }
          if (have() + value.length > total) throw new MediaError("bad_length", `attachment ${a.id}: the server sent more than the blob's ${total} bytes; nothing was saved`);
          await write(value);
          feed(value);
          lastProgress = Date.now();
          pause = 100;
          opts.onProgress?.({ phase: "download", done: have(), total });
        }
      } finally {
        reader.releaseLock();
      }
      if (have() < total) throw new Retry(`download: the connection ended at ${have()} of ${total} bytes`);
    } catch (e) {
      if (!(e instanceof Retry)) throw e;
      if (Date.now() - lastProgress > stallMs) throw new MediaError("unreachable", `attachment ${a.id}: no progress for ${stallMs} ms (${e.message}); ${have()} of ${total} bytes kept for the next try`);
      await sleep(e.waitMs ?? pause * (1 + Math.random() / 4));
      pause = Math.min(pause * 2, 5000);
    }
  }
}

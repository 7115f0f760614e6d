/**
 * Encrypted attachments (docs/E2E.md "Attachments"; the HTTP side is the
 * server's `media.upload` stanza and tus endpoints, docs/PROTOCOL.md).
 *
 * Signal's attachment scheme: a fresh 64-byte key per attachment (32 for
 * AES-256-CBC, 32 for HMAC-SHA256), the plaintext zero-padded to a size
 * bucket (`paddedSize`) so the server learns a bucket and not the size, then
 *
 *   blob = IV(16) || AES-256-CBC(plaintext || zeros, PKCS7 on the last block) || HMAC-SHA256(iv || ct)(32)
 *
 * and `digest` = SHA-256 of the whole blob. The key, digest and real size go
 * to the recipients inside the end-to-end encrypted message; the server
 * stores and serves the blob only.
 *
 * Streaming on both sides: nothing here holds more than one upload chunk
 * (`chunkBytes`, 4 MiB by default) or one read of the file at a time, so a
 * 100 MiB attachment costs a few MiB of memory.
 * - Upload: tus (PATCH from the server's offset). A file path is encrypted as
 *   it is read; to resume from an offset that is no longer in the chunk in
 *   hand, the file is encrypted again from the start with the same key and
 *   IV (CBC with the same key, IV and plaintext gives the same bytes) and the
 *   first `offset` bytes are skipped: no copy of the ciphertext on disk. A
 *   stream (which cannot be read twice, and whose size is known only at its
 *   end) is encrypted into a temporary file first (ciphertext only, 0600).
 * - Download: the ciphertext goes to `<dest>.part` (resumed with Range after
 *   a dropped connection, and across calls), hashed as it arrives; the
 *   digest and the MAC are checked BEFORE any plaintext is written; then it
 *   is decrypted into `<dest>.tmp`, fsynced and renamed to `dest`.
 *
 * node:crypto and fetch only, so it runs in Node and in Bun. The download half is
 * src/client/media-download.ts (this file: the scheme, sizes, encryption, upload).
 */
import { createCipheriv, createHash, createHmac, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm, stat, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { blobSize, fetchFailed, fetchTls, IV_BYTES, KEY_BYTES, keyParts, largestFile, MediaError, paddedSize, patchRefused, Retry, sleep, type Attachment, type Progress, type Request, type Slot, type UploadOptions } from "./media-format.ts";

export * from "./media-format.ts";

const ZEROS = new Uint8Array(64 * 1024);

// ---- encryption --------------------------------------------------------------------------------------

/** Where a finished encryption pass leaves its results. */
interface Sealed {
  digest: Uint8Array | null;
  /** Plaintext bytes read. */
  size: number;
}


/**
 * The blob of `source`, in pieces: IV, ciphertext as the plaintext arrives, the zero padding (computed from the
 * number of bytes read), the MAC. When the pass ends, `out.digest` and `out.size` are set. `expect`: the size the
 * plaintext must have (a file: it must not change while it is sent), checked at the end.
 */
export async function* encryptBlob(source: AsyncIterable<Uint8Array>, key: Uint8Array, iv: Uint8Array, out: Sealed, expect?: number): AsyncGenerator<Uint8Array> {
  const { aes, mac } = keyParts(key);
  const cipher = createCipheriv("aes-256-cbc", aes, iv); // PKCS7 on the final block (setAutoPadding's default)
  const hmac = createHmac("sha256", mac);
  const sha = createHash("sha256");
  const emit = (b: Uint8Array): Uint8Array => {
    hmac.update(b);
    sha.update(b);
    return b;
  };
  out.digest = null;
  yield emit(iv);
  let n = 0;
  for await (const chunk of source) {
    n += chunk.length;
    if (expect !== undefined && n > expect) throw new MediaError("file_changed", `the file grew while it was being sent (more than ${expect} bytes); nothing was sent`);
    const ct = cipher.update(chunk);
    if (ct.length) yield emit(ct);
  }
  if (expect !== undefined && n !== expect) throw new MediaError("file_changed", `the file shrank while it was being sent (${n} of ${expect} bytes); nothing was sent`);
  for (let pad = paddedSize(n) - n; pad > 0; ) {
    const z = ZEROS.subarray(0, Math.min(pad, ZEROS.length));
    pad -= z.length;
    const ct = cipher.update(z);
    if (ct.length) yield emit(ct);
  }
  yield emit(cipher.final());
  const tag = hmac.digest();
  sha.update(tag);
  yield tag;
  out.digest = sha.digest();
  out.size = n;
}

/** A web ReadableStream or any async iterable of bytes, as an async iterable. */
function iterate(source: AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>): AsyncIterable<Uint8Array> {
  if (Symbol.asyncIterator in source) return source as AsyncIterable<Uint8Array>;
  const stream = source as ReadableStream<Uint8Array>;
  return {
    async *[Symbol.asyncIterator]() {
      const reader = stream.getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          yield value;
        }
      } finally {
        reader.releaseLock();
      }
    },
  };
}

/** The bytes of `src` from position `skip` on (the first `skip` are consumed and dropped). */
async function* skipBytes(src: AsyncIterable<Uint8Array>, skip: number): AsyncGenerator<Uint8Array> {
  for await (const b of src) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    yield skip > 0 ? b.subarray(skip) : b;
    skip = 0;
  }
}

export const READ_BYTES = 1 << 20;

/** The plaintext file's bytes; the file is opened again each pass. */
export const readFile = (path: string, start = 0): AsyncIterable<Uint8Array> => createReadStream(path, { start, highWaterMark: READ_BYTES });

// ---- upload ------------------------------------------------------------------------------------------

export type UploadSource = string | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>;

/** The ciphertext from `offset` on, and the pass's result (its digest once it reached the end). */
type CipherFrom = (offset: number) => { bytes: AsyncIterable<Uint8Array>; sealed: Sealed };

const b64 = (b: Uint8Array): string => Buffer.from(b).toString("base64");

/**
 * Encrypts `source` (a file path, or a stream) under a fresh key and uploads it; resolves with what the
 * recipients need (send it inside an end-to-end encrypted message: SecureClient.sendFile does). Resumes from the
 * server's offset after a dropped connection or a server restart; starts over with a new slot when the
 * capability expired (410) before the end.
 */
export async function uploadAttachment(request: Request, source: UploadSource, opts: UploadOptions = {}): Promise<Attachment> {
  const key = new Uint8Array(randomBytes(KEY_BYTES));
  const iv = new Uint8Array(randomBytes(IV_BYTES));
  const type = opts.type ?? "application/octet-stream";
  let spool: string | null = null;
  try {
    let size: number;
    let name = opts.name;
    let from: CipherFrom;
    if (typeof source === "string") {
      const st = await stat(source).catch((e: NodeJS.ErrnoException) => {
        throw new MediaError("no_file", `cannot read ${source}: ${e.code === "ENOENT" ? "no such file" : e.message}`);
      });
      if (!st.isFile()) throw new MediaError("no_file", `${source} is not a file`);
      size = st.size;
      name ??= source.split(/[\\/]/).pop() || undefined;
      from = (offset) => {
        const sealed: Sealed = { digest: null, size: 0 };
        return { bytes: skipBytes(encryptBlob(readFile(source), key, iv, sealed, size), offset), sealed };
      };
    } else {
      // A stream: read once, into a temporary ciphertext file (its size is known only at its end).
      const dir = await mkdtemp(join(tmpdir(), "switchboard-att-"));
      spool = join(dir, "blob");
      const sealed: Sealed = { digest: null, size: 0 };
      const fh = await open(spool, "wx", 0o600);
      try {
        let done = 0;
        for await (const b of encryptBlob(iterate(source), key, iv, sealed)) {
          await writeAll(fh, b);
          done += b.length;
          opts.onProgress?.({ phase: "encrypt", done, total: done });
        }
      } finally {
        await fh.close();
      }
      size = sealed.size;
      const file = spool;
      from = (offset) => ({ bytes: readFile(file, offset), sealed });
    }
    const total = blobSize(size);
    for (let fresh = 0; ; fresh++) {
      // No `mime`: the type goes to the recipients inside the encrypted message only; the server learns a size bucket.
      const slot = await request<Slot>("media.upload", opts.recipients ? { size: total, n: opts.recipients } : { size: total }).catch((e: { code?: string; detail?: { max?: number } }) => {
        const max = e.detail?.max;
        if (e.code !== "too_large" || typeof max !== "number") throw e;
        const most = largestFile(max);
        throw new MediaError("too_large", `${name ?? "the file"} is too large for this server: ${size} bytes are ${total} once padded and encrypted, and the server takes blobs of at most ${max} bytes (media.max_file): files of at most ${most} bytes`, e.detail);
      });
      try {
        const digest = await sendBlob(slot, total, from, opts);
        const att: Attachment = { id: slot.id, url: slot.url, key: b64(key), digest: b64(digest), size, type };
        if (name) att.name = name;
        return att;
      } catch (e) {
        if (e instanceof MediaError && e.code === "expired" && fresh === 0) continue; // a slow upload outlived its capability: once more
        throw e;
      }
    }
  } finally {
    if (spool) await rm(join(spool, ".."), { recursive: true, force: true });
  }
}

export async function writeAll(fh: FileHandle, b: Uint8Array): Promise<void> {
  for (let off = 0; off < b.length; ) off += (await fh.write(b, off, b.length - off)).bytesWritten;
}

/** The tus part: PATCHes of `chunkBytes` from the server's offset until it has `total` bytes; returns the digest. */
async function sendBlob(slot: Slot, total: number, from: CipherFrom, opts: UploadOptions): Promise<Uint8Array> {
  const chunkBytes = opts.chunkBytes ?? 4 << 20;
  const stallMs = opts.stallMs ?? 60_000;
  const auth = { "Tus-Resumable": "1.0.0", Authorization: `Bearer ${slot.tok}` };
  const tls = fetchTls(opts.tls, slot.url);
  const buf = new Uint8Array(Math.min(chunkBytes, total));
  let offset = 0; // the server's, as last heard
  let lastProgress = Date.now();
  let pause = 100;
  let pass = from(0);
  let it = pass.bytes[Symbol.asyncIterator]();
  let carry: Uint8Array | null = null; // what the iterator gave beyond the last chunk
  let fill = 0; // bytes of buf in use; buf holds [offset, offset + fill)

  /** Fills buf from the pass; the pass is at offset + fill. */
  const refill = async () => {
    while (fill < buf.length) {
      let b = carry;
      carry = null;
      if (!b) {
        const r = await it.next();
        if (r.done) break;
        b = r.value;
      }
      const n = Math.min(b.length, buf.length - fill);
      buf.set(b.subarray(0, n), fill);
      fill += n;
      if (n < b.length) carry = b.subarray(n);
    }
  };
  /** Positions the pass at `at` (the server's offset): within the chunk in hand, or a new pass from there. */
  const seek = async (at: number) => {
    if (at >= offset && at <= offset + fill) {
      buf.copyWithin(0, at - offset, fill);
      fill -= at - offset;
    } else {
      await it.return?.(undefined);
      pass = from(at);
      it = pass.bytes[Symbol.asyncIterator]();
      carry = null;
      fill = 0;
    }
    offset = at;
  };

  while (offset < total) {
    try {
      await refill();
      if (fill === 0) throw new MediaError("file_changed", `the attachment ended at ${offset} of ${total} bytes`);
      const r = await fetch(slot.url, {
        method: "PATCH",
        headers: { ...auth, "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(offset) },
        body: buf.subarray(0, fill),
        ...tls,
      }).catch((e: Error) => {
        throw fetchFailed(e, "upload");
      });
      if (r.status === 204) {
        const next = Number(r.headers.get("upload-offset"));
        if (!Number.isSafeInteger(next) || next < offset || next > offset + fill) throw new Retry(`upload: the server answered offset ${r.headers.get("upload-offset")} for ${offset}+${fill}`);
        const moved = next - offset;
        buf.copyWithin(0, moved, fill);
        fill -= moved;
        offset = next;
        if (moved > 0) {
          lastProgress = Date.now();
          pause = 100;
        }
        opts.onProgress?.({ phase: "upload", done: offset, total });
        continue;
      }
      throw await patchRefused(r, offset);
    } catch (e) {
      if (!(e instanceof Retry)) {
        await it.return?.(undefined);
        throw e;
      }
      if (Date.now() - lastProgress > stallMs) throw new MediaError("unreachable", `upload of ${slot.id} made no progress for ${stallMs} ms (${e.message}); ${offset} of ${total} bytes are on the server`);
      await sleep(e.waitMs ?? pause * (1 + Math.random() / 4));
      pause = Math.min(pause * 2, 5000);
      const at = await headOffset(slot, auth, tls);
      if (at === null) continue; // still unreachable: wait again
      if (at > total) throw new MediaError("bad_offset", `the server claims ${at} bytes of a ${total}-byte upload`);
      await seek(at);
      opts.onProgress?.({ phase: "upload", done: at, total }); // where the server says it is: the resumption point
    }
  }
  // Drain the pass to its end (the MAC and digest come last); nothing is left to send.
  for (;;) {
    if (carry || fill > 0) throw new MediaError("file_changed", "the attachment produced more bytes than its size");
    const r = await it.next();
    if (r.done) break;
    if (r.value.length) throw new MediaError("file_changed", "the attachment produced more bytes than its size");
  }
  if (!pass.sealed.digest) throw new MediaError("file_changed", "the upload ended before the attachment's digest was known");
  return pass.sealed.digest;
}

/** The server's offset of an upload (tus HEAD), or null when the server cannot be reached or is failing. */
async function headOffset(slot: Slot, auth: Record<string, string>, tls: ReturnType<typeof fetchTls>): Promise<number | null> {
  let r: Response;
  try {
    r = await fetch(slot.url, { method: "HEAD", headers: auth, ...tls });
  } catch {
    return null;
  }
  if (r.status >= 500 || r.status === 429) return null;
  if (r.status === 410) throw new MediaError("expired", "the upload capability expired before the upload finished");
  if (r.status !== 200) throw new MediaError(`http_${r.status}`, `upload status refused by the server: HTTP ${r.status}`);
  const n = Number(r.headers.get("upload-offset"));
  if (!Number.isSafeInteger(n) || n < 0) throw new MediaError("bad_offset", `the server's Upload-Offset is ${r.headers.get("upload-offset")}`);
  return n;
}

/**
 * `/media/<id>` on the HTTP port (docs/PROTOCOL.md §6.12): tus 1.0.0 core
 * (HEAD and PATCH with the upload token; no creation extension: the slot comes
 * from `media.upload` over the authenticated connection) and GET with Range.
 *
 * Why tus and not Range-based resume: the client asks the server where it is
 * (HEAD's Upload-Offset) instead of guessing from what it sent, which is the
 * one number that is right after a crash of either side; it is a published
 * protocol with clients in every language. Core only (no extensions) because
 * the SDK needs nothing more.
 *
 * Streaming both ways: a PATCH body is read chunk by chunk (Bun hands over
 * 64-256 KiB at a time) and appended to the staging file, its bytes counted
 * against the declared size as they arrive (a body that would pass it is
 * refused with 413 and what it wrote is cut off again); a GET streams the
 * store's range into the response. Neither holds a blob in memory.
 */
import { BlobState, type BlobRow } from "../../store/media-index.ts";
import { BLOB_ID } from "../../store/blobs.ts";
import { log } from "../log.ts";
import type { MediaService } from "./service.ts";

const TUS = { "Tus-Resumable": "1.0.0" };
/** Bytes appended between two fsyncs + offset records: what a kill -9 can make the client send again. */
const SYNC_EVERY = 4 << 20;

const json = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
  Response.json(body, { status, headers: { ...TUS, "Cache-Control": "no-store", ...headers } });

export async function mediaRequest(svc: MediaService, req: Request, path: string): Promise<Response> {
  const pre = svc.cors.preflight(req);
  if (pre !== null) return pre;
  let res: Response;
  try {
    res = await route(svc, req, path);
  } catch (e) {
    // The store failed (S3 unreachable, a disk error): the client retries from HEAD.
    log.error("media: a request failed on the server's side", { path, err: (e as Error).message });
    res = json(503, { error: "unavailable", message: "the blob store failed; retry" }, { "Retry-After": "1" });
  }
  return svc.cors.apply(req, res);
}

async function route(svc: MediaService, req: Request, path: string): Promise<Response> {
  if (path === "/media" || path === "/media/") {
    if (req.method === "OPTIONS") {
      return new Response(null, { status: 204, headers: { ...TUS, "Tus-Version": "1.0.0", "Tus-Max-Size": String(svc.maxFile) } });
    }
    return json(404, { error: "not_found", message: "there is no listing of blobs; a blob's URL comes with its message" });
  }
  const id = path.slice("/media/".length);
  if (!BLOB_ID.test(id)) return json(404, { error: "not_found" });
  switch (req.method) {
    case "PATCH":
      return patch(svc, req, id);
    case "HEAD":
      return req.headers.has("authorization") ? uploadStatus(svc, req, id) : download(svc, req, id, true);
    case "GET":
      return download(svc, req, id, false);
    case "OPTIONS":
      return new Response(null, { status: 204, headers: { ...TUS, "Tus-Version": "1.0.0", Allow: "GET, HEAD, PATCH, OPTIONS" } });
    default:
      return json(405, { error: "method" }, { Allow: "GET, HEAD, PATCH, OPTIONS" });
  }
}

/** tus HEAD: where the upload is. */
async function uploadStatus(svc: MediaService, req: Request, id: string): Promise<Response> {
  const a = svc.authorize(id, req.headers.get("authorization"));
  if (!("row" in a)) return new Response(null, { status: a.status, headers: { ...TUS, "Cache-Control": "no-store" } });
  const row = await svc.recover(a.row);
  return new Response(null, { status: 200, headers: { ...TUS, "Cache-Control": "no-store", "Upload-Offset": String(row.offset), "Upload-Length": String(row.size) } });
}

/** tus PATCH: appends the body at Upload-Offset, counting bytes against the declared size. */
async function patch(svc: MediaService, req: Request, id: string): Promise<Response> {
  const a = svc.authorize(id, req.headers.get("authorization"));
  if (!("row" in a)) return json(a.status, { error: a.error, ...(a.why ? { why: a.why } : {}) });
  if (req.headers.get("tus-resumable") !== "1.0.0") return json(412, { error: "tus_version", message: "send Tus-Resumable: 1.0.0" }, { "Tus-Version": "1.0.0" });
  if (req.headers.get("content-type") !== "application/offset+octet-stream") return json(415, { error: "content_type", message: "a PATCH body is application/offset+octet-stream" });
  if (svc.busy.has(id)) {
    svc.m.refused.busy.inc();
    return json(409, { error: "busy", message: "another PATCH of this upload is being written; ask HEAD for the offset and retry" });
  }
  svc.busy.add(id); // at once, before any await: a second PATCH must find it
  try {
    return await write(svc, req, id, await svc.recover(a.row, true));
  } catch (e) {
    log.error("media: a PATCH failed on the server's side", { id, err: (e as Error).message });
    return json(500, { error: "internal", message: "the server could not store the bytes; ask HEAD for the offset and retry" });
  } finally {
    svc.busy.delete(id);
  }
}

/** The body of a PATCH whose upload this request holds (`busy`), from the row's offset. */
async function write(svc: MediaService, req: Request, id: string, row: BlobRow): Promise<Response> {
  const at = Number(req.headers.get("upload-offset"));
  if (row.state !== BlobState.PARTIAL || !Number.isSafeInteger(at) || at !== row.offset) {
    svc.m.refused.offset.inc();
    return json(409, { error: "offset", offset: row.offset, message: `the upload is at ${row.offset}, not ${req.headers.get("upload-offset")}` });
  }
  const room = row.size - at;
  const declared = req.headers.get("content-length");
  const overrun = () => {
    svc.m.refused.overrun.inc();
    return json(413, { error: "too_large", limit: "declared size", size: row.size, offset: at, message: `the upload was declared as ${row.size} bytes; this PATCH would pass it` });
  };
  if (declared !== null && at + Number(declared) > row.size) return overrun();
  if (svc.diskFull()) {
    svc.m.refused.disk_high_water.inc();
    return json(429, { error: "disk_high_water", retry_after_ms: 60_000, message: "the server's disk is above its high-water mark" }, { "Retry-After": "60" });
  }
  let fh: Awaited<ReturnType<typeof svc.staging.openAt>> | null = null;
  let written = 0;
  let synced = 0;
  const record = async () => {
    await fh!.sync(); // the bytes first, then the offset that says they are there
    svc.index.setOffset(id, at + written);
    synced = written;
  };
  try {
    fh = await svc.staging.openAt(id, at);
    let broken = false;
    try {
      for await (const chunk of req.body ?? ([] as Uint8Array[])) {
        if (written + chunk.length > room) {
          // Past the declared size: nothing of this PATCH is kept (what it wrote before is cut off again).
          await fh.close();
          fh = null;
          svc.staging.truncate(id, at);
          svc.index.setOffset(id, at);
          return overrun();
        }
        for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
        written += chunk.length;
        svc.m.uploadBytes.inc(chunk.length);
        if (written - synced >= SYNC_EVERY) await record();
      }
    } catch {
      broken = true; // the client went away mid-body: what arrived is kept (tus), the client resumes from HEAD's offset
    }
    if (written > synced) await record();
    await fh!.close();
    fh = null;
    if (broken) return json(400, { error: "broken_body", offset: at + written });
    if (at + written === row.size) {
      await svc.blobs.putFile(id, svc.staging.path(id));
      svc.index.finish(id);
      svc.m.uploads.inc();
    }
    return new Response(null, { status: 204, headers: { ...TUS, "Upload-Offset": String(at + written) } });
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` against a blob of `size` bytes: [start, end), or "bad" when unsatisfiable, null when absent. */
export function parseRange(h: string | null, size: number): { start: number; end: number } | "bad" | null {
  if (h === null) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (m === null || (m[1] === "" && m[2] === "")) return null; // not a single range we understand: the whole blob (RFC 9110 allows ignoring it)
  if (m[1] === "") {
    const n = Math.min(Number(m[2]), size);
    return n === 0 ? "bad" : { start: size - n, end: size };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size : Math.min(Number(m[2]) + 1, size);
  if (start >= size || end <= start) return "bad";
  return { start, end };
}

/** GET (and HEAD without a token): the blob, whole or a range; 404 unknown or unfinished, 410 expired or deleted. */
async function download(svc: MediaService, req: Request, id: string, head: boolean): Promise<Response> {
  const now = Date.now();
  let row = svc.index.get(id);
  let size: number;
  if (row === null) {
    // media.store = s3 in a cluster: the blob may be another node's upload; the bucket has it or not.
    if (svc.blobs.kind !== "s3") return json(404, { error: "not_found" });
    const n = await svc.blobs.size(id);
    if (n === null) return json(404, { error: "not_found" });
    size = n;
  } else {
    if (row.state === BlobState.GONE || row.expires <= now) return json(410, { error: "gone", why: row.goneWhy ?? "expired" });
    row = await svc.recover(row);
    if (row.state !== BlobState.DONE) return json(404, { error: "not_found", why: "unfinished" });
    size = row.size;
  }
  const range = parseRange(req.headers.get("range"), size);
  if (range === "bad") return json(416, { error: "range" }, { "Content-Range": `bytes */${size}` });
  const { start, end } = range ?? { start: 0, end: size };
  const headers: Record<string, string> = {
    "Content-Type": "application/octet-stream",
    "Content-Length": String(end - start),
    "Accept-Ranges": "bytes",
    "Cache-Control": "private, max-age=31536000, immutable", // a blob never changes
  };
  if (range) headers["Content-Range"] = `bytes ${start}-${end - 1}/${size}`;
  const status = range ? 206 : 200;
  if (head) return new Response(null, { status, headers });
  const body = await svc.blobs.read(id, start, end);
  if (body === null) return json(410, { error: "gone" });
  // Counted as offered, not as received: wrapping the body to count what leaves would make Bun drop the
  // Content-Length (src/store/blobs.ts, read). A download is the response that carries the blob's last byte.
  svc.m.downloadBytes.inc(end - start);
  if (end === size && row !== null) svc.downloadFinished(id);
  return new Response(body, { status, headers });
}

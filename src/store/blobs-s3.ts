/**
 * Finished attachment blobs in an S3 bucket (`media.store = "s3"`), through
 * Bun's built-in S3Client (AWS S3, R2, MinIO, GCS's S3 API; tested against
 * s3rver). Keys are `<prefix><id>`. With S3 every node of a cluster serves
 * every blob; uploads in progress stay on the uploading node's disk
 * (src/store/blobs.ts, Staging), and the finished file goes up in one
 * multipart upload.
 *
 * Memory: a blob goes up in parts of `partSize` (8 MiB), at most `queueSize`
 * (2) in flight, read from the staging file 1 MiB at a time, so a 100 MiB blob
 * costs about 16 MiB of buffers however large it is; downloads stream a ranged
 * GET straight into the response.
 */
import { S3Client } from "bun";
import { createReadStream } from "node:fs";
import { rm } from "node:fs/promises";
import { BLOB_ID, type BlobStore } from "./blobs.ts";

export interface S3Settings {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  prefix: string;
}

const PART = 8 << 20;

export class S3Blobs implements BlobStore {
  readonly kind = "s3" as const;
  private readonly client: S3Client;

  constructor(private readonly s: S3Settings) {
    if (!s.bucket) throw new Error("media.s3_bucket: set the bucket that holds the attachment blobs (media.store = s3)");
    this.client = new S3Client({
      bucket: s.bucket,
      endpoint: s.endpoint || undefined,
      region: s.region || undefined,
      accessKeyId: s.accessKeyId || undefined,
      secretAccessKey: s.secretAccessKey || undefined,
    });
  }

  private key(id: string): string {
    if (!BLOB_ID.test(id)) throw new Error(`blob id ${JSON.stringify(id)}: expected 22 base64url characters (a 128-bit random id)`);
    return this.s.prefix + id;
  }

  async putFile(id: string, path: string): Promise<void> {
    // An S3 PUT is atomic: the object appears whole when the (multipart) upload completes, or not at all.
    const w = this.client.file(this.key(id)).writer({ partSize: PART, queueSize: 2, retry: 3 });
    try {
      for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>) {
        w.write(chunk);
        await w.flush(); // backpressure: at most a part or two buffered
      }
      await w.end();
    } catch (e) {
      throw new Error(`S3 upload of blob ${id} to ${this.s.bucket}: ${(e as Error).message}`);
    }
    await rm(path, { force: true });
  }

  async read(id: string, start: number, end: number): Promise<ReadableStream<Uint8Array> | null> {
    const n = await this.size(id);
    if (n === null) return null;
    end = Math.min(end, n);
    if (end <= start) return new Blob([]).stream();
    // A ranged GET of a presigned URL, its body handed on as it is. Bun.serve (1.4.5) drops the Content-Length
    // of any streamed body it has not read whole by the time it answers and sends it chunked (oven-sh/bun#10507,
    // open): small ranges keep it, a 9 MiB blob does not (tested against s3rver). `new Response(s3file)` would
    // answer 302 to a presigned URL instead (the client then fetches from the bucket itself, which must be
    // reachable and learns the client's address), S3File.slice().stream() is always chunked.
    const url = this.client.presign(this.key(id), { method: "GET", expiresIn: 300 });
    const r = await fetch(url, { headers: { Range: `bytes=${start}-${end - 1}` } });
    if (r.status === 404) return null;
    if (r.status !== 206 && r.status !== 200) throw new Error(`S3 GET of blob ${id}: HTTP ${r.status}`);
    return r.body;
  }

  async size(id: string): Promise<number | null> {
    try {
      return (await this.client.stat(this.key(id))).size;
    } catch (e) {
      if (isMissing(e)) return null;
      throw e;
    }
  }

  async delete(id: string): Promise<void> {
    try {
      await this.client.delete(this.key(id));
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
  }

  async *ids(): AsyncIterable<string> {
    let token: string | undefined;
    do {
      const page = await this.client.list({ prefix: this.s.prefix, maxKeys: 1000, continuationToken: token });
      for (const o of page.contents ?? []) {
        const id = o.key.slice(this.s.prefix.length);
        if (BLOB_ID.test(id)) yield id;
      }
      token = page.isTruncated ? page.nextContinuationToken : undefined;
    } while (token);
  }

  close(): void {}
}

function isMissing(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "NoSuchKey" || code === "NotFound" || /404|not found/i.test(String((e as Error).message));
}

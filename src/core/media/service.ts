/**
 * Attachments, the server's part (issue 15; docs/MEDIA.md for operators,
 * docs/PROTOCOL.md §6.12 for the wire, docs/E2E.md §12 for the SDK). The
 * server stores and serves ciphertext it cannot read:
 *
 * - `media.upload {size, n?}` over the authenticated connection reserves a
 *   blob: a 128-bit random id, and a capability (a random token, kept hashed)
 *   bound to the device, the declared size and an expiry, after the per-file,
 *   per-account and disk checks (this file).
 * - The HTTP port's `/media/<id>` (src/core/media/http.ts): tus 1.0.0 HEAD and
 *   PATCH with the token, GET with Range without one (the id is the read
 *   capability; there is no listing).
 * - A sweep every `media.sweep_every`: expired blobs and abandoned uploads
 *   become tombstones (410) and their bytes are deleted in the same sweep;
 *   staging files nobody owns are removed.
 *
 * Core, not a module: it holds store backends (a module may not import
 * src/store/) and serves HTTP; its one stanza is registered to the hooks
 * like core's `link.approve`.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { statfsSync } from "node:fs";
import { join } from "node:path";
import type { Database } from "bun:sqlite";
import type { Config } from "../config.ts";
import type { Counter, Metrics } from "../metrics.ts";
import type { IqReply, Registration } from "../module.ts";
import { log } from "../log.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import type { Conn } from "../../transport/connection.ts";
import { parseOrigins } from "../../transport/ws.ts";
import { MediaCors } from "./cors.ts";
import { DiskBlobs, Staging, type BlobStore } from "../../store/blobs.ts";
import { S3Blobs } from "../../store/blobs-s3.ts";
import { BlobState, SqliteMediaIndex, type BlobRow, type GoneWhy, type MediaIndex } from "../../store/media-index.ts";

const DAY_MS = 86_400_000;

export interface MediaDeps {
  config: Config;
  metrics: Metrics;
  /** Is this device still one of the account's (a revoked device's capability stops working)? */
  deviceActive(account: string, device: number): boolean;
  /** The HTTP port bound (for blob URLs when media.public_url is empty); null before listen. */
  httpPort(): number | null;
  /** The HTTPS twin's bound port (http.tls_port), null when off. */
  httpsPort?(): number | null;
  /** media.db's WAL checkpoints go where the queue's commits run (DeliveryQueue offloadCheckpoints: the commit Worker). */
  checkpoints?(db: Database, path: string): void;
}

/** Why an upload or a request was refused, as the metric's label. */
type Refusal = "too_large" | "account_bytes" | "daily_uploads" | "daily_bytes" | "disk_high_water" | "overrun" | "token" | "offset" | "busy";

export class MediaService {
  readonly index: MediaIndex;
  readonly blobs: BlobStore;
  readonly staging: Staging;
  private timer: ReturnType<typeof setInterval> | null = null;
  /** Ids with a PATCH being written (one writer per upload: a second PATCH gets 409). */
  readonly busy = new Set<string>();
  private sweeping: Promise<unknown> | null = null;
  readonly m: {
    uploads: Counter; uploadBytes: Counter; downloads: Counter; downloadBytes: Counter; slots: Counter;
    refused: Record<Refusal, Counter>; swept: Record<GoneWhy | "orphan", Counter>; sweeps: Counter;
  };

  constructor(private readonly deps: MediaDeps) {
    const c = deps.config;
    this.cors = new MediaCors(parseOrigins(c.ws.origins));
    const dir = join(c.dataDir, "media");
    const index = (this.index = new SqliteMediaIndex(join(c.dataDir, "media.db"), c.queue.durability));
    deps.checkpoints?.(index.db, join(c.dataDir, "media.db"));
    this.staging = new Staging(join(dir, "partial"));
    const s = c.media;
    this.blobs = s.store === "s3"
      ? new S3Blobs({ endpoint: s.s3Endpoint, bucket: s.s3Bucket, region: s.s3Region, accessKeyId: s.s3AccessKeyId, secretAccessKey: s.s3SecretAccessKey, prefix: s.s3Prefix })
      : new DiskBlobs(join(dir, "blobs"));
    const mt = deps.metrics;
    const refusedHelp = "Attachment uploads and requests refused, by the limit or check that refused them.";
    const sweptHelp = "Attachment blobs deleted by the media sweep, by why (expired, downloaded, deleted account, abandoned upload, orphan staging file).";
    this.m = {
      slots: mt.counter("switchboard_media_slots_total", "Uploads reserved (media.upload answered)."),
      uploads: mt.counter("switchboard_media_uploads_total", "Attachment uploads finished (the blob's last byte arrived and is in its store)."),
      uploadBytes: mt.counter("switchboard_media_upload_bytes_total", "Blob bytes received by PATCH and kept."),
      downloads: mt.counter("switchboard_media_downloads_total", "Downloads that reached the blob's last byte."),
      downloadBytes: mt.counter("switchboard_media_download_bytes_total", "Blob bytes sent by GET."),
      refused: Object.fromEntries((["too_large", "account_bytes", "daily_uploads", "daily_bytes", "disk_high_water", "overrun", "token", "offset", "busy"] as const)
        .map((r) => [r, mt.counter("switchboard_media_refused_total", refusedHelp, { reason: r })])) as Record<Refusal, Counter>,
      swept: Object.fromEntries((["expired", "downloaded", "deleted", "abandoned", "orphan"] as const)
        .map((w) => [w, mt.counter("switchboard_media_swept_total", sweptHelp, { why: w })])) as Record<GoneWhy | "orphan", Counter>,
      sweeps: mt.counter("switchboard_media_sweeps_total", "Media sweeps completed."),
    };
    mt.gauge("switchboard_media_blobs", "Attachment blobs held (finished and unfinished, not gone).", () => this.totals().blobs);
    mt.gauge("switchboard_media_stored_bytes", "Declared bytes of the attachment blobs held.", () => this.totals().bytes);
    mt.gauge("switchboard_media_uploads_in_progress", "Unfinished uploads (reserved, not all bytes received).", () => this.totals().partial);
    mt.gauge("switchboard_media_patches_active", "PATCH requests being written now.", () => this.busy.size);
  }

  private cachedTotals: { at: number; t: ReturnType<MediaIndex["totals"]> } | null = null;
  private totals(): ReturnType<MediaIndex["totals"]> {
    const scrape = this.deps.metrics.scrapes;
    if (this.cachedTotals?.at !== scrape) this.cachedTotals = { at: scrape, t: this.index.totals() };
    return this.cachedTotals.t;
  }

  /** CORS for /media from ws.origins (./cors.ts). */
  readonly cors: MediaCors;

  get maxFile(): number {
    return this.deps.config.media.maxFile;
  }

  get retentionMs(): number {
    const c = this.deps.config;
    return (c.media.retention || c.queue.retention) * 1000;
  }

  /** `<public_url>/media/<id>`. */
  url(id: string): string {
    const c = this.deps.config;
    let base = c.media.publicUrl.replace(/\/+$/, "");
    if (!base) {
      const host = c.http.host === "0.0.0.0" || c.http.host === "::" ? "127.0.0.1" : c.http.host;
      // The HTTPS twin when there is one: a page loaded over https may not fetch http:// blobs of another host
      // (mixed content), and a page over http may fetch https ones (CORS, ws.origins).
      const https = this.deps.httpsPort?.() ?? null;
      const hp = host.includes(":") ? `[${host}]` : host;
      base = https !== null ? `https://${hp}:${https}` : `http://${hp}:${this.deps.httpPort() ?? c.http.port}`;
    }
    return `${base}/media/${id}`;
  }

  start(): void {
    const c = this.deps.config;
    if (c.http.port < 0) log.warn("attachments are off: http.port is -1 (media.upload is refused)", {});
    else if (!c.media.publicUrl && (c.http.host === "0.0.0.0" || c.http.host === "::")) {
      log.warn("media.public_url is empty and http.host listens on every address: blob URLs name 127.0.0.1; set media.public_url", {});
    }
    this.timer = setInterval(() => void this.sweep(), c.media.sweepEvery * 1000);
    // What expired while the server was down, and any orphan of a crash. The store is listed for blobs the
    // index does not know only on disk: a bucket is shared by the nodes of a cluster, and another node's
    // blobs are unknown here.
    void this.sweep({ store: this.blobs.kind === "disk" });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sweeping;
    this.index.close();
    this.blobs.close();
  }

  /** Percent of the data directory's file system in use, or null where it cannot be read. */
  diskUsedPercent(): number | null {
    try {
      const s = statfsSync(this.deps.config.dataDir);
      return s.blocks > 0 ? 100 * (1 - s.bavail / s.blocks) : null;
    } catch {
      return null;
    }
  }

  /** Over the disk high-water mark: no new bytes are taken (the store may be on the same disk as the queues). */
  diskFull(): boolean {
    const hw = this.deps.config.media.diskHighWater;
    if (hw >= 100) return false;
    const used = this.diskUsedPercent();
    return used !== null && used > hw;
  }

  /** `media.upload {size, n?, mime?}`: a slot `{id, url, tok, exp, max}`, or the limit that refuses it. */
  reserve(conn: Conn, a: Record<string, unknown>, now = Date.now()): IqReply {
    const s = this.deps.config.media;
    const size = a.size;
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 1) return { ok: false, e: ErrorCode.BAD_FIELD, m: "a.size must be the blob's length in bytes (a positive integer)" };
    const n = a.n ?? 0;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 100_000) return { ok: false, e: ErrorCode.BAD_FIELD, m: "a.n, when given, must be the number of recipient devices (0..100000)" };
    if (this.deps.config.http.port < 0) return { ok: false, e: ErrorCode.FORBIDDEN, m: "attachments are off on this server (http.port is -1)" };
    if (size > s.maxFile) {
      this.m.refused.too_large.inc();
      return { ok: false, e: ErrorCode.TOO_LARGE, m: `a blob of ${size} bytes is larger than this server takes (media.max_file = ${s.maxFile} bytes)`, x: { limit: "media.max_file", max: s.maxFile } };
    }
    const u = this.index.usage(conn.account, now - DAY_MS);
    const quota = (limit: Refusal & ("account_bytes" | "daily_uploads" | "daily_bytes"), max: number, used: number, what: string): IqReply => {
      this.m.refused[limit].inc();
      // Daily limits free up as the oldest upload of the window turns a day old; stored bytes as blobs expire.
      const retry = limit === "account_bytes" ? undefined : Math.max(1000, (u.oldest ?? now) + DAY_MS - now);
      const x: Record<string, unknown> = { limit: `media.${limit}`, max, used };
      if (retry !== undefined) x.retry_ms = retry;
      return { ok: false, e: ErrorCode.QUOTA, m: `${what} (media.${limit} = ${max}, used ${used})${retry ? `; retry in ${Math.ceil(retry / 1000)} s` : "; blobs free their bytes when they expire"}`, x };
    };
    if (u.storedBytes + size > s.accountBytes) return quota("account_bytes", s.accountBytes, u.storedBytes, `${size} more bytes would pass the bytes this account may have stored`);
    if (u.uploads + 1 > s.dailyUploads) return quota("daily_uploads", s.dailyUploads, u.uploads, "this account began as many uploads in the last 24 hours as it may");
    if (u.uploadedBytes + size > s.dailyBytes) return quota("daily_bytes", s.dailyBytes, u.uploadedBytes, `${size} more bytes would pass what this account may upload in 24 hours`);
    if (this.diskFull()) {
      this.m.refused.disk_high_water.inc();
      return { ok: false, e: ErrorCode.STORAGE_UNAVAILABLE, m: `the server's disk is above its high-water mark (media.disk_high_water = ${s.diskHighWater} %); try later`, x: { cause: "disk_high_water", retry_ms: 60_000 } };
    }
    const id = randomBytes(16).toString("base64url");
    const tok = randomBytes(16).toString("base64url");
    const exp = now + s.uploadTtl * 1000;
    this.index.create({
      id, account: conn.account, device: conn.device, size, created: now, capExp: exp, expires: now + this.retentionMs,
      tokHash: tokenHash(tok), recipients: this.deps.config.media.deleteAfterDownload ? n : 0,
    });
    this.m.slots.inc();
    return { ok: true, r: { id, url: this.url(id), tok, exp, max: s.maxFile } };
  }

  /** The row a token opens for writing, or why not (HTTP status and error). */
  authorize(id: string, auth: string | null, now = Date.now()): { row: BlobRow } | { status: number; error: string; why?: string } {
    const row = this.index.get(id);
    if (row === null) return { status: 404, error: "not_found" };
    if (row.state === BlobState.GONE) return { status: 410, error: "gone", why: row.goneWhy ?? undefined };
    const tok = /^Bearer\s+(\S+)$/i.exec(auth ?? "")?.[1];
    if (!tok || !timingSafeEqual(tokenHash(tok), Buffer.from(row.tokHash))) {
      this.m.refused.token.inc();
      return { status: 403, error: "forbidden" };
    }
    if (row.capExp <= now) return { status: 410, error: "expired" };
    if (!this.deps.deviceActive(row.account, row.device)) {
      this.m.refused.token.inc();
      return { status: 403, error: "forbidden", why: "the uploading device was revoked" };
    }
    return { row };
  }

  /**
   * Finishes what a crash or a failed store write left half-done, and returns the row as it stands: a PARTIAL
   * row whose bytes are all in the store already (killed between putFile and finish), or whose staging file
   * holds every byte (the move into the store failed: S3 unreachable) is made DONE. `held`: the caller holds
   * the upload's `busy` mark; without it a PATCH being written is left alone. Throws when the store write fails.
   */
  async recover(row: BlobRow, held = false): Promise<BlobRow> {
    if (row.state !== BlobState.PARTIAL || (!held && this.busy.has(row.id))) return row;
    const staged = this.staging.size(row.id);
    if (staged === null) {
      if ((await this.blobs.size(row.id)) === row.size && this.index.finish(row.id)) return this.index.get(row.id)!;
      return row;
    }
    if (row.offset !== row.size || staged < row.size) return row;
    if (!held) this.busy.add(row.id);
    try {
      if (staged > row.size) this.staging.truncate(row.id, row.size);
      await this.blobs.putFile(row.id, this.staging.path(row.id));
      if (this.index.finish(row.id)) this.m.uploads.inc();
    } finally {
      if (!held) this.busy.delete(row.id);
    }
    return this.index.get(row.id)!;
  }

  /** A download reached the blob's end: counted; with media.delete_after_download, the blob goes once every declared recipient has it. */
  downloadFinished(id: string): void {
    this.m.downloads.inc();
    const row = this.index.downloaded(id);
    // Its bytes go at the next sweep, not now: the response that counted may still be reading the file.
    if (row && row.recipients > 0 && row.downloads >= row.recipients) this.index.gone(id, "downloaded", Date.now());
  }

  /** Registrations to the hooks: the stanza, and the hooks that end blobs. */
  registrations(): Registration[] {
    return [
      { iq: "media.upload", handle: (conn: Conn, a: Record<string, unknown>) => this.reserve(conn, a) },
      {
        hook: "account:deleted",
        handle: (account: string) => {
          const now = Date.now();
          for (const id of this.index.ofAccount(account)) this.index.gone(id, "deleted", now);
          void this.sweep();
        },
      },
    ];
  }

  /** Deletes a gone blob's bytes (store and staging) and marks its tombstone cleared. */
  private async clear(row: BlobRow, why: GoneWhy | null): Promise<void> {
    if (this.busy.has(row.id)) return; // a PATCH is writing: the next sweep clears it
    this.staging.remove(row.id);
    await this.blobs.delete(row.id);
    this.index.cleared(row.id);
    if (why) this.m.swept[why].inc();
  }

  /**
   * One sweep (never two at once): due blobs become tombstones and lose their bytes, staging files without
   * an unfinished upload are removed, old tombstones pruned; with `store` (disk only), blobs in the store the
   * index does not know (a lost index) are deleted too. Resolves when the bytes are gone.
   */
  sweep(opts: { store?: boolean } = {}): Promise<unknown> {
    if (this.sweeping) return this.sweeping;
    this.sweeping = this.sweepOnce(opts).catch((e) => log.error("media sweep failed; retried at the next", { err: (e as Error).message })).finally(() => (this.sweeping = null));
    return this.sweeping;
  }

  private async sweepOnce(opts: { store?: boolean }): Promise<void> {
    const now = Date.now();
    for (;;) {
      const due = this.index.due(now, 500);
      for (const row of due) this.index.gone(row.id, row.expires <= now ? "expired" : "abandoned", now);
      if (due.length < 500) break;
    }
    for (;;) {
      const gone = this.index.uncleared(500);
      for (const row of gone) await this.clear(row, row.goneWhy);
      if (gone.length < 500) break;
    }
    for (const id of this.staging.ids()) {
      if (this.busy.has(id)) continue;
      const row = this.index.get(id);
      if (row === null || row.state !== BlobState.PARTIAL) {
        this.staging.remove(id);
        this.m.swept.orphan.inc();
      }
    }
    if (opts.store) {
      for await (const id of this.blobs.ids()) {
        const row = this.index.get(id);
        if (row === null) {
          await this.blobs.delete(id);
          this.m.swept.orphan.inc();
        }
      }
    }
    this.index.prune(now - this.retentionMs);
    this.m.sweeps.inc();
  }
}

export const tokenHash = (tok: string): Buffer => createHash("sha256").update(tok).digest();

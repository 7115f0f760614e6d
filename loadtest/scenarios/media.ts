/**
 * `media`: encrypted attachments through the server's HTTP port, as the SDK sends them (src/client/media.ts:
 * encrypt, `media.upload`, tus PATCHes; GET, digest and MAC check, decrypt). `--parallel` devices each upload
 * `--files` / parallel files of `--size` bytes (one random plaintext file per device, a fresh key per upload)
 * and download each one `--downloads` times; every download's plaintext is compared with the source's SHA-256.
 * The server's RSS is sampled all along (its peak tells whether big files stream: it must not grow with
 * --size). Human lines, then one JSON line.
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes } from "node:crypto";
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { latencyJson } from "../accounting.ts";
import { rssKb } from "../proc.ts";
import { FatalError, UsageError, pct, round, say, type Outcome, type Run } from "../run.ts";
import { cpuDelta, otherCpuPct, serverSample } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag, type Identity } from "../setup.ts";
import { fmtLatency, newHistogram, summary } from "../stats.ts";
import { setup } from "../target.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import { keyToFile, rawPublicKey, type KeyFile } from "../../src/client/keys.ts";
import { blobSize, largestFile, uploadAttachment, type Attachment } from "../../src/client/media.ts";
import { downloadAttachment } from "../../src/client/media-download.ts";

const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

function keyFileOf(id: Identity): KeyFile {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, Buffer.from(id.seed, "hex")]), format: "der", type: "pkcs8" });
  return keyToFile({ privateKey, publicKey: rawPublicKey(createPublicKey(privateKey)) }, id.account, id.device);
}

/** 100M, 512k, 1G, or bytes. */
function parseSize(v: string | undefined, def: number): number {
  if (v === undefined) return def;
  if (v === "max") return largestFile(100 << 20); // the default media.max_file counts padded, encrypted bytes
  const m = /^(\d+(?:\.\d+)?)([kKmMgG]?)$/.exec(v);
  if (!m) throw new UsageError(`--size must be bytes or a number with k, M or G (powers of 1024), got ${JSON.stringify(v)}`);
  const mult = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g"];
  return Math.round(Number(m[1]) * mult);
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const b of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(b as Buffer);
  return h.digest("hex");
}

async function media(run: Run): Promise<Outcome> {
  const size = parseSize(run.flag("--size"), 1 << 20);
  const concurrency = run.num("--parallel", 2, 1);
  const files = run.num("--files", 8, 1);
  const downloads = run.num("--downloads", 1, 0);
  const tag = runTag();
  const { target: t, ids } = await setup(run, Array.from({ length: concurrency }, (_, i) => `media${tag}-${i}`));
  const work = mkdtempSync(join(tmpdir(), "sb-media-load-"));
  const clients: SwitchboardClient[] = [];
  let peakRss = 0;
  let rssStart: number | null = null;
  const sampler = setInterval(() => {
    const r = t.pid === null ? null : rssKb(t.pid);
    if (r !== null) peakRss = Math.max(peakRss, r);
  }, 100);
  try {
    say(`media: ${files} files of ${size} bytes (blob ${blobSize(size)} bytes), ${concurrency} devices at a time, ${downloads} download(s) each`);
    const sources: { path: string; sha: string }[] = [];
    for (let i = 0; i < concurrency; i++) {
      const path = join(work, `source-${i}`);
      // Written in 1 MiB pieces: the generator must not hold a 100 MiB file either.
      const piece = Math.min(size, 1 << 20);
      writeFileSync(path, new Uint8Array(0));
      const h = createHash("sha256");
      const fd = await Bun.file(path).writer();
      for (let left = size; left > 0; left -= piece) {
        const b = randomBytes(Math.min(piece, left));
        h.update(b);
        fd.write(b);
      }
      await fd.end();
      sources.push({ path, sha: h.digest("hex") });
    }
    for (const id of ids) {
      const c = new SwitchboardClient({ host: t.host, port: t.port, key: keyFileOf(id), reconnect: true, rx: false });
      await c.connect();
      clients.push(c);
    }
    rssStart = t.pid === null ? null : rssKb(t.pid);
    peakRss = rssStart ?? 0;
    const upLat = newHistogram();
    const downLat = newHistogram();
    let uploaded = 0, verified = 0, failed = 0, corrupt = 0, upBytes = 0, downBytes = 0;
    const failures: string[] = [];
    let next = 0;
    const s0 = serverSample(run, t.pid);
    const t0 = performance.now();
    let upMs = 0, downMs = 0;
    await Promise.all(
      clients.map(async (c, w) => {
        const src = sources[w]!;
        while (next < files) {
          const n = next++;
          let att: Attachment;
          const u0 = performance.now();
          try {
            att = await uploadAttachment((op, args) => c.request(op, args), src.path, { type: "application/octet-stream" });
          } catch (e) {
            failed++;
            failures.push(`upload ${n}: ${(e as Error).message}`);
            continue;
          }
          const du = performance.now() - u0;
          upMs += du;
          upLat.recordValue(Math.max(1, Math.round(du * 1000)));
          uploaded++;
          upBytes += blobSize(size);
          for (let d = 0; d < downloads; d++) {
            const dest = join(work, `got-${n}-${d}`);
            const d0 = performance.now();
            try {
              await downloadAttachment(att, dest);
              const dd = performance.now() - d0;
              downMs += dd;
              downLat.recordValue(Math.max(1, Math.round(dd * 1000)));
              downBytes += blobSize(size);
              if ((await sha256File(dest)) === src.sha) verified++;
              else {
                corrupt++;
                failures.push(`download ${n}/${d}: the plaintext differs from the source`);
              }
            } catch (e) {
              failed++;
              failures.push(`download ${n}/${d}: ${(e as Error).message}`);
            } finally {
              rmSync(dest, { force: true });
            }
          }
        }
      }),
    );
    const wallS = (performance.now() - t0) / 1000;
    const s1 = serverSample(run, t.pid);
    const cpu = cpuDelta(s0, s1);
    const up = summary(upLat);
    const down = summary(downLat);
    const mb = (b: number) => b / 1e6;
    const result = {
      scenario: "media",
      params: { size, blob: blobSize(size), files, concurrency, downloads, mode_server: run.serverMode },
      // An upload is the "message" here: sent = uploads, delivered = downloads whose plaintext matched, lost = failures.
      sent: uploaded, delivered: verified, lost: failed, corrupt, duplicates: 0, out_of_order: 0,
      sent_per_s: round(uploaded / wallS, 2), delivered_per_s: round(verified / wallS, 2),
      uploads_per_s: round(uploaded / wallS, 2), downloads_per_s: round((verified + corrupt) / wallS, 2),
      // Per transfer time (one device's view), and the aggregate over the run's wall time.
      upload_mb_per_s: upMs ? round(mb(upBytes) / (upMs / 1000 / concurrency), 1) : null,
      download_mb_per_s: downMs ? round(mb(downBytes) / (downMs / 1000 / concurrency), 1) : null,
      total_mb_per_s: round(mb(upBytes + downBytes) / wallS, 1),
      latency_of: "one upload: encrypt + media.upload + PATCHes",
      latency_ms: latencyJson(up),
      download_latency_ms: latencyJson(down),
      wall_s: round(wallS, 2),
      server: {
        pid: t.pid, cpu_s: cpu === null ? null : round(cpu, 2), cpu_pct: cpu === null ? null : pct(cpu, wallS),
        rss_kb: t.pid === null ? null : rssKb(t.pid), rss_start_kb: rssStart, rss_peak_kb: peakRss || null,
        rss_growth_kb: rssStart === null ? null : peakRss - rssStart, bytes_per_conn: null,
      },
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: cpu ? round(uploaded / cpu, 1) : null,
      failures: failures.slice(0, 10),
    };
    say(`uploads: ${uploaded} in ${wallS.toFixed(2)} s (${result.uploads_per_s}/s), ${result.upload_mb_per_s ?? "-"} MB/s per transfer; latency ${fmtLatency(up)}`);
    say(`downloads: ${verified} verified, ${corrupt} corrupt, ${result.downloads_per_s}/s, ${result.download_mb_per_s ?? "-"} MB/s per transfer; latency ${fmtLatency(down)}`);
    say(`all transfers: ${result.total_mb_per_s} MB/s; failures ${failed}`);
    if (cpu !== null) say(`server CPU ${cpu.toFixed(2)} s (${result.server.cpu_pct}%); RSS ${rssStart} KiB at the start, peak ${peakRss} KiB (+${peakRss - (rssStart ?? 0)} KiB) while ${concurrency} transfers of ${size} bytes streamed`);
    upLat.destroy();
    downLat.destroy();
    if (failed || corrupt) {
      console.error(`\nloadtest: WARNING: ${failed} failed and ${corrupt} corrupt transfers\n  ${failures.slice(0, 5).join("\n  ")}\n`);
      return { result, code: 4 };
    }
    if (uploaded === 0) throw new FatalError("no upload succeeded");
    return { result, code: 0 };
  } finally {
    clearInterval(sampler);
    for (const c of clients) await c.close().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
}

export const MEDIA: Scenario = {
  name: "media",
  summary: "encrypted attachments over the HTTP port (SDK upload/download): uploads and downloads\nper second, MB/s, every plaintext checked by digest, server RSS peak",
  server: true,
  flags: [
    ["--size N", "plaintext bytes per file (default 1M; k, M, G suffixes are powers of 1024; max: the\nlargest file whose padded blob fits the default 100 MiB media.max_file, 97.5 MiB)"],
    ["--files N", "uploads in all (default 8)"],
    ["--parallel N", "devices transferring at once, one file each (default 2)"],
    ["--downloads N", "downloads of each uploaded file (default 1)"],
  ],
  run: media,
};

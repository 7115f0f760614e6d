/**
 * The load generator's `media` scenario, tiny, against a spawned server:
 * uploads and downloads through the SDK, every plaintext checked by digest,
 * the result line's fields (rates, MB/s, the server's RSS peak). No timing
 * assertions: only counts and the presence of the measurements.
 */
import { expect, test } from "bun:test";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");

test("media: 3 files of 300 KiB by 2 devices, each downloaded twice, every plaintext verified", async () => {
  const p = Bun.spawn([process.execPath, join(ROOT, "loadtest/main.ts"), "media", "--spawn", "--files", "3", "--size", "300k", "--parallel", "2", "--downloads", "2"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  let result: any = null;
  try {
    result = JSON.parse(out.trim().split("\n").pop() ?? "");
  } catch {}
  if (code !== 0 || !result) console.error(out, err);
  expect(code).toBe(0);
  expect(result).toMatchObject({ scenario: "media", sent: 3, delivered: 6, lost: 0, corrupt: 0 });
  expect(result.params).toMatchObject({ size: 300 * 1024, files: 3, concurrency: 2, downloads: 2 });
  for (const k of ["uploads_per_s", "downloads_per_s", "upload_mb_per_s", "download_mb_per_s", "total_mb_per_s", "latency_ms", "download_latency_ms"]) expect(result[k]).not.toBeNull();
  expect(result.server.rss_peak_kb).toBeGreaterThan(0);
  expect(result.server.rss_start_kb).toBeGreaterThan(0);
}, 120_000);

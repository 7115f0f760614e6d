/**
 * Preloaded into a spawned server by `idle --probe` (bun --preload): where the server's memory is, read inside it.
 * On SIGUSR2 it writes `$SB_PROBE_DIR/<n>.json`; on SIGUSR1 it runs a full collection first (Bun.gc(true): a
 * synchronous stop of ~20 ms, so only after the scenario's readings). Each reading: RSS; /proc/self/smaps summed
 * into the mimalloc arena (anonymous rw mappings of 1 GiB and more: the JS heap and the native state), bun's own
 * text (file-backed code, paged in as it first runs) and JIT code (anonymous rwx); `heapStats()` of bun:jsc without
 * a collection (its heap size and capacity count the extra memory); the outbound buffer pool's counts. The server's
 * code is found from its entry (argv[1]), so a `--server-main` tree of another commit is read as it is.
 * BENCHMARKS.md memory4.
 */
import { heapStats } from "bun:jsc";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const dir = process.env.SB_PROBE_DIR;
if (!dir) throw new Error("loadtest/probe.ts: SB_PROBE_DIR is not set; it is preloaded by `idle --probe`, which sets it");
// Older trees may not count their pool (pooledBuffers came with d2f6171): null then.
const outbound = (await import(resolve(dirname(process.argv[1] ?? "."), "../protocol/outbound.ts")).catch(() => null)) as { pooledBuffers?: () => { small: number; large: number } } | null;

export interface ProbeReading {
  rss_kb: number;
  arena_kb: number;
  text_kb: number;
  jit_kb: number;
  heap_size: number;
  heap_capacity: number;
  extra_memory: number;
  objects: number;
  pool: { small: number; large: number } | null;
}

function reading(): ProbeReading {
  let arena = 0;
  let text = 0;
  let jit = 0;
  let kind: "arena" | "text" | "jit" | null = null;
  const exe = process.execPath;
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      const size = parseInt(m[2]!, 16) - parseInt(m[1]!, 16);
      const anon = m[4] === "";
      kind = anon && m[3] === "rw-p" && size >= 1 << 30 ? "arena" : anon && m[3] === "rwxp" ? "jit" : m[4] === exe && m[3] === "r-xp" ? "text" : null;
      continue;
    }
    if (kind !== null && line.startsWith("Rss:")) {
      const kb = Number(line.slice(4).trim().split(" ")[0]);
      if (kind === "arena") arena += kb;
      else if (kind === "text") text += kb;
      else jit += kb;
    }
  }
  const h = heapStats();
  return {
    rss_kb: Math.round(process.memoryUsage().rss / 1024), arena_kb: arena, text_kb: text, jit_kb: jit,
    heap_size: h.heapSize, heap_capacity: h.heapCapacity, extra_memory: h.extraMemorySize, objects: h.objectCount,
    pool: outbound?.pooledBuffers?.() ?? null,
  };
}

let n = 0;
function write(r: ProbeReading): void {
  const path = join(dir!, `${n++}.json`);
  writeFileSync(path + ".tmp", JSON.stringify(r));
  renameSync(path + ".tmp", path); // the scenario polls for the file: never a half-written one
}
process.on("SIGUSR2", () => write(reading()));
process.on("SIGUSR1", () => {
  Bun.gc(true);
  write(reading());
});

/**
 * What a scenario is to main.ts: its name, its lines in --help, the flags it
 * takes (read from its help rows, so the two cannot disagree), and `run`.
 */
import type { Outcome, Run } from "./run.ts";

/** One row of a help section: the flags column and its description (continuation lines after "\n"). */
export type FlagRow = [flags: string, description: string];

export interface Scenario {
  name: string;
  /** Its line(s) under "scenarios:" in --help. */
  summary: string;
  /** Its section of --help; every --flag named in a row's first column is one it takes. */
  flags: FlagRow[];
  /** Lines after its flags in --help. */
  notes?: string;
  /** Whether it needs exactly one of --spawn and --target (provision and crash do not: one needs no server, the other always spawns its own). */
  server: boolean;
  /** Whether it runs over `--transport ws` (its clients are LeanConns of loadtest/worker.ts, which speak WS too). */
  ws?: boolean;
  run(run: Run): Promise<Outcome>;
}

/** Every --flag named in the first column of `rows`. */
export function flagNames(rows: FlagRow[]): string[] {
  return rows.flatMap(([col]) => col.match(/--[a-z][a-z-]*/g) ?? []);
}

/** A help section: rows with the descriptions in one column from the 27th character on. */
export function section(title: string, rows: FlagRow[], notes?: string): string {
  const lines = [`${title}:`];
  for (const [col, desc] of rows) {
    const [first, ...rest] = desc.split("\n");
    lines.push(desc ? `  ${col.padEnd(23)} ${first}` : `  ${col}`);
    for (const r of rest) lines.push(`${" ".repeat(26)}${r}`);
  }
  if (notes) for (const n of notes.split("\n")) lines.push(`  ${n}`);
  return lines.join("\n");
}

/** Flags that say where the server is: every scenario with `server` takes them. */
export const SERVER_FLAGS: FlagRow[] = [
  ["--spawn", "start a server on ephemeral ports (pinned with taskset): from source, or"],
  ["--server-bin PATH", "... the compiled binary (npm run build makes dist/switchboard)"],
  ["--target HOST:PORT", "an already running server (TCP or TLS port, matching --transport; http: its HTTP port)"],
  ["--data-dir DIR", "the server's data directory (with --target: the load accounts are inserted into it;\nwith --spawn: default a fresh temporary directory, removed afterwards)"],
  ["--ids FILE", "with --target: identities from `provision` instead of --data-dir"],
  ["--server-pid PID", "with --target: the server's pid for CPU/RSS (default: found from the listening port)"],
  ["--ca FILE", "with --target and tls: the CA to trust (default DATA_DIR/tls/dev-cert.pem)"],
  ["--http-port N", "with --target: the server's HTTP port, to read counters from /metrics"],
  ["--server-cpus LIST", "CPUs for a spawned server (default 0)"],
  ["--server-gc-log", "with --spawn: the server logs each GC pause (BUN_JSC_logGC=1); pairs reports those of the measured phase"],
  ["--server-hog", "with --spawn: a busy loop pinned to the server's CPUs for the run (a shared core, for A/Bs)"],
  ["--worker-cpus LIST", 'CPUs for the workers (default 1; "" = no pinning)'],
  ["--server-flags \"...\"", 'extra flags for a spawned server (e.g. "--queue-commit-ms 10")'],
  ["--server-bun-flags \"...\"", 'flags for the bun running a spawned server (e.g. "--cpu-prof-md --cpu-prof-dir /tmp/prof")'],
  ["--server-main FILE", "the server entry to spawn (default src/cli/main.ts; e.g. a patched scratch copy for an A/B)\n(with --server-bin, --server-bun-flags go to the binary as BUN_OPTIONS)"],
];

export const COMMON_FLAGS: FlagRow[] = [
  ["--transport tcp|tls|ws", "default tcp; ws (the WebSocket port, one binary message per frame) for idle and pairs only"],
  ["--workers N", "worker processes (default: one per 10 000 connections, at most 15 000 each)"],
  ["--concurrency N", "logins in flight per worker (default 400 / workers)"],
  ["--keep", "keep the temporary data directory"],
];

/** Flags that never take a value. */
export const BOOLEAN_FLAGS = new Set(["--spawn", "--oneway", "--keep", "--help", "-h", "--syscalls", "--spread", "--redis-kill", "--overload", "--server-hog", "--server-gc-log", "--probe"]);

/** Flags whose value is a list of flags for another program, so it may start with "--". */
export const VERBATIM_FLAGS = new Set(["--server-flags", "--server-bun-flags"]);

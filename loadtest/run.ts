/**
 * One run of the load generator: its flags, what it started (a server, worker
 * processes, a temporary data directory) and how it ends. Scenarios return a
 * result or throw one of the errors below; main.ts turns either into the exit
 * status, after `shutdown()` (the only place that stops what the run started).
 */
import { rmSync } from "node:fs";
import { UsageError } from "../src/cli/args.ts";
import type { SpawnedServer } from "./proc.ts";
import type { Worker } from "./workers.ts";

export { UsageError };

/** The run cannot go on (a worker died, logins failed, the server did not answer): exit 5, with an `error` JSON line. */
export class FatalError extends Error {
  override name = "FatalError";
}

/** SIGINT: exit 130, no JSON line. */
export class Interrupted extends Error {
  override name = "Interrupted";
}

/** What a scenario ends with: the one JSON line, and the exit status (0 ok; 1 loss; 3 duplicates or disorder; 4 failures). */
export interface Outcome {
  result: Record<string, unknown>;
  code: number;
}

export class Run {
  readonly spawnMode: boolean;
  readonly transport: "tcp" | "tls" | "ws";
  server: SpawnedServer | null = null;
  /** With --server-hog: the busy loop pinned to the server's CPUs (it also ends when this process does). */
  hog: ReturnType<typeof Bun.spawn> | null = null;
  workers: Worker[] = [];
  /** The data directory this run made (with --spawn and no --data-dir): removed at the end unless --keep. */
  tmpDir: string | null = null;
  shuttingDown = false;
  /** Rejects with the first error raised outside the scenario's own call chain (a worker's exit, SIGINT). */
  readonly failed: Promise<never>;
  private reject!: (e: Error) => void;

  constructor(
    readonly scenario: string,
    readonly flags: Record<string, string>,
  ) {
    this.failed = new Promise<never>((_, reject) => (this.reject = reject));
    this.failed.catch(() => {}); // observed by main.ts's race; never an unhandled rejection
    this.spawnMode = flags["--spawn"] === "true";
    const transport = flags["--transport"] ?? "tcp";
    if (transport !== "tcp" && transport !== "tls" && transport !== "ws") throw new UsageError("--transport must be tcp, tls or ws");
    this.transport = transport;
  }

  /** Ends the run from outside the scenario (see `failed`). The first call wins. */
  fail(e: Error): void {
    if (!this.shuttingDown) this.reject(e);
  }

  flag(name: string): string | undefined {
    return this.flags[name];
  }

  bool(name: string): boolean {
    return this.flags[name] === "true";
  }

  /** A numeric flag, at least `min`; `def` when absent. */
  num(name: string, def: number, min = 0): number {
    const v = this.flags[name];
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new UsageError(`${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  }

  /** A word flag that must be one of `allowed`. */
  choice<T extends string>(name: string, def: T, allowed: readonly T[]): T {
    const v = (this.flags[name] ?? def) as T;
    if (!allowed.includes(v)) throw new UsageError(`${name} must be ${allowed.join(" or ")}`);
    return v;
  }

  /** Whitespace-separated words of a flag ("--server-flags", "--server-bun-flags"). */
  words(name: string): string[] {
    return (this.flags[name] ?? "").split(/\s+/).filter(Boolean);
  }

  /** CPUs of the load generator's processes ("" = no pinning). */
  get workerCpus(): string {
    return this.flags["--worker-cpus"] ?? "1";
  }

  /** "spawn" or "target", as the result lines' params say. */
  get serverMode(): "spawn" | "target" {
    return this.spawnMode ? "spawn" : "target";
  }

  /** Whether the spawned server still runs (always true against a --target). */
  async serverAlive(): Promise<boolean> {
    const s = this.server;
    if (!s) return true;
    return !(await Promise.race([s.proc.exited.then(() => true), Bun.sleep(10).then(() => false)]));
  }

  /** Stops the workers (asked, then killed after 3 s), the spawned server (SIGTERM, SIGKILL after 12 s), and removes the temporary data directory. */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const w of this.workers) {
      if (!w.exited) {
        try {
          w.send({ cmd: "exit" });
        } catch {}
      }
    }
    await Promise.race([Promise.all(this.workers.map((w) => w.proc.exited)), Bun.sleep(3000)]);
    for (const w of this.workers) if (!w.exited) w.proc.kill("SIGKILL");
    this.hog?.kill("SIGKILL");
    if (this.server) {
      this.server.proc.kill("SIGTERM");
      const code = await Promise.race([this.server.proc.exited, Bun.sleep(12_000).then(() => null)]);
      if (code === null) this.server.proc.kill("SIGKILL");
    }
    if (this.tmpDir && !this.bool("--keep")) rmSync(this.tmpDir, { recursive: true, force: true });
    else if (this.tmpDir) say(`kept data directory ${this.tmpDir}`);
  }
}

export const say = (s: string): void => console.log(s);
export const sleep = (ms: number): Promise<void> => Bun.sleep(ms);

/** CPU seconds over wall seconds, in % of one core with one decimal. */
export function pct(cpu: number, wallS: number): number {
  return Math.round((cpu / wallS) * 1000) / 10;
}

export const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;

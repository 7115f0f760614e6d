/**
 * A private redis-server per test file: bound to 127.0.0.1 on a free port
 * below 32768 (bun-platform Pitfall 6: a listener inside the ephemeral range
 * can collide with client sockets in TIME_WAIT), its own temp dir, no
 * persistence unless asked. `kill9()` / `restart()` keep the port, so clients
 * that reconnect to the same URL find the new process.
 *
 * @example
 * const redis = await startRedis();
 * try { … redis.url … await redis.kill9(); await redis.restart(); } finally { redis.cleanup(); }
 */
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Named in every failure so that a missing binary is never a silent skip. */
export const REDIS_PACKAGE = "redis-server";

export interface TestRedis {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  readonly proc: Subprocess;
  /** Runs one command through redis-cli and returns its raw output, trimmed. */
  cli(...args: string[]): Promise<string>;
  /** SIGTERM, then wait for the exit code. */
  stop(): Promise<number>;
  kill9(): Promise<void>;
  /** A new redis-server on the same port and dir (persistence as configured). */
  restart(): Promise<void>;
  cleanup(): void;
}

export interface RedisOptions {
  /** appendonly yes with fsync always; off by default, since leases are soft state. */
  persist?: boolean;
}

function binary(name: string): string {
  // PATH is read now, not cached at startup, so a test can prove the failure message.
  const path = Bun.which(name, { PATH: process.env.PATH ?? "" });
  if (!path) {
    throw new Error(`${name} is not installed: install the Debian package "${REDIS_PACKAGE}" (apt-get update && apt-get install -y ${REDIS_PACKAGE}); .ci/run does this`);
  }
  return path;
}

/** A port in 20000–32767 that nothing listens on right now (redis may still race for it; the caller retries). */
function freePort(): number {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 12768);
    try {
      const l = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
      l.stop(true);
      return port;
    } catch {}
  }
  throw new Error("no free port below 32768 after 50 tries");
}

async function spawn(port: number, dir: string, opts: RedisOptions): Promise<Subprocess<"ignore", "pipe", "pipe">> {
  const args = [
    binary("redis-server"),
    "--port", String(port),
    "--bind", "127.0.0.1",
    "--dir", dir,
    "--daemonize", "no",
    "--protected-mode", "no",
    "--save", "",
    "--appendonly", opts.persist ? "yes" : "no",
    "--appendfsync", "always",
    "--loglevel", "notice",
  ];
  const proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  // redis logs to stdout; "Ready to accept connections" is its last startup line.
  const reader = proc.stdout.getReader();
  const dec = new TextDecoder();
  let log = "";
  while (!log.includes("Ready to accept connections")) {
    const { value, done } = await reader.read();
    if (done) {
      const err = await new Response(proc.stderr).text();
      throw new Error(`redis-server on port ${port} exited (${await proc.exited}) before it was ready:\n${log}${err}`);
    }
    log += dec.decode(value, { stream: true });
  }
  // Keep draining so a chatty log can never block redis on a full pipe.
  void (async () => {
    try {
      while (!(await reader.read()).done) {}
    } catch {}
  })();
  return proc;
}

export async function startRedis(opts: RedisOptions = {}): Promise<TestRedis> {
  binary("redis-server");
  const dir = mkdtempSync(join(tmpdir(), "sb-redis-"));
  let port = 0;
  let proc: Subprocess | undefined;
  let lastError: unknown;
  for (let attempt = 0; attempt < 5 && !proc; attempt++) {
    port = freePort();
    try {
      proc = await spawn(port, dir, opts);
    } catch (e) {
      lastError = e; // most likely lost the port to someone else between the probe and the bind
    }
  }
  if (!proc) throw lastError;
  let current: Subprocess = proc;
  const r: TestRedis = {
    get port() { return port; },
    get url() { return `redis://127.0.0.1:${port}`; },
    dir,
    get proc() { return current; },
    async cli(...args) {
      const p = Bun.spawn([binary("redis-cli"), "-h", "127.0.0.1", "-p", String(port), ...args], { stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      if (code !== 0) throw new Error(`redis-cli ${args.join(" ")} exited ${code}: ${err}`);
      return out.trim();
    },
    async stop() {
      current.kill("SIGTERM");
      return await current.exited;
    },
    async kill9() {
      current.kill("SIGKILL");
      await current.exited;
    },
    async restart() {
      if (current.exitCode === null && current.signalCode === null) throw new Error("restart() needs the old redis-server stopped first: call kill9() or stop()");
      // The old process's accepted sockets may linger; redis sets SO_REUSEADDR, so a few retries cover a slow kernel.
      for (let attempt = 0; ; attempt++) {
        try {
          current = await spawn(port, dir, opts);
          return;
        } catch (e) {
          if (attempt >= 20) throw e;
          await Bun.sleep(100);
        }
      }
    },
    cleanup() {
      try {
        current.kill("SIGKILL");
      } catch {}
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return r;
}

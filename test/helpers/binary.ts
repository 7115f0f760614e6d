/**
 * The compiled `switchboard` binary for tests: `buildBinary()` runs the
 * project's own `npm run build` command (the script text from package.json,
 * with only --outfile changed) once per source tree, `startBinaryServer()`
 * runs `serve` from it on ephemeral ports, and `runCli` / `CliProcess` run
 * its subcommands as real processes.
 *
 * The build is cached on disk under the temp directory, keyed by a hash of
 * everything that goes into it (src/, web/, tools/build-app.ts, package.json,
 * the lock file, the Bun version), so test files and test runs share one build until the code
 * changes. A build takes about a second and 110 MB.
 *
 * @example
 * const bin = await buildBinary();
 * const srv = await startBinaryServer(bin);
 * const r = await runCli(bin, ["config", "--check"], { cwd: srv.dataDir });
 */
import type { Subprocess } from "bun";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { ROOT } from "./harness.ts";
import { CLEAN_ENV, LineProcess } from "./line-process.ts";

/** The environment without SWITCHBOARD_* variables of whoever runs the tests. */
export { CLEAN_ENV };

const CACHE_PREFIX = "switchboard-bin-";

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out.sort();
}

/** A hash of every input of the build: a changed source file means a new binary. */
function buildKey(script: string): string {
  const h = createHash("sha256");
  h.update(`bun ${Bun.version}\0${script}\0`);
  // web/ and the tool that builds it: the binary embeds the web client (tools/build-app.ts).
  for (const f of [...filesUnder(join(ROOT, "src")), ...filesUnder(join(ROOT, "web")), join(ROOT, "tools", "build-app.ts"), join(ROOT, "package.json"), join(ROOT, "package-lock.json")]) {
    if (!existsSync(f)) continue;
    h.update(relative(ROOT, f) + "\0");
    h.update(readFileSync(f));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 20);
}

/** Drops cached builds of older source trees; those younger than an hour may belong to a run still going. */
function pruneOldBuilds(keep: string): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(CACHE_PREFIX) || name === keep) continue;
    const p = join(tmpdir(), name);
    try {
      if (Date.now() - statSync(p).mtimeMs > 3600_000) rmSync(p, { recursive: true, force: true });
    } catch {}
  }
}

let building: Promise<string> | undefined;

/** The path of a binary built from the current tree by package.json's `build` script. */
export function buildBinary(): Promise<string> {
  return (building ??= (async () => {
    const script: unknown = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).scripts?.build;
    if (typeof script !== "string" || !/--outfile\s+\S+/.test(script)) {
      throw new Error(`package.json scripts.build must be a \`bun build --compile ... --outfile FILE\` command; it is ${JSON.stringify(script)}`);
    }
    const key = buildKey(script);
    const dir = join(tmpdir(), CACHE_PREFIX + key);
    const bin = join(dir, "switchboard");
    if (existsSync(bin)) return bin;
    mkdirSync(dir, { recursive: true });
    // Built under a private name and renamed, so a concurrent run never executes half a file.
    const partial = join(dir, `switchboard.partial-${process.pid}`);
    const cmd = script.replace(/--outfile\s+\S+/, `--outfile '${partial}'`);
    const p = Bun.spawn(["sh", "-c", cmd], {
      cwd: ROOT,
      env: { ...CLEAN_ENV, PATH: `${join(ROOT, "node_modules/.bin")}:${process.env.PATH ?? ""}` },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (code !== 0 || !existsSync(partial)) throw new Error(`build failed (exit ${code}): ${cmd}\n${out}\n${err}`);
    renameSync(partial, bin);
    pruneOldBuilds(CACHE_PREFIX + key);
    return bin;
  })());
}

export interface BinaryServer {
  tcp: number;
  tls: number;
  http: number;
  /** The server's own pid (from its `listening` line), which differs from proc.pid under a wrapper such as strace. */
  pid: number;
  dataDir: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything the server wrote on stderr so far (JSON log lines). */
  stderr(): string;
  /** SIGTERM to the server; resolves with the exit code of the spawned process. */
  stop(): Promise<number>;
}

/**
 * Starts `BIN serve` on ephemeral ports and waits for its `listening` line.
 * `wrap` goes before the binary (e.g. `["strace", "-f", ...]`).
 */
export async function startBinaryServer(bin: string, opts: { dataDir: string; args?: string[]; wrap?: string[]; cwd?: string }): Promise<BinaryServer> {
  mkdirSync(opts.dataDir, { recursive: true }); // also the default working directory
  const argv = [...(opts.wrap ?? []), bin, "serve", "--data-dir", opts.dataDir, "--tcp-port", "0", "--tls-port", "0", "--http-port", "0", ...(opts.args ?? [])];
  const proc = Bun.spawn(argv, { cwd: opts.cwd ?? opts.dataDir, env: CLEAN_ENV, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let errText = "";
  void (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) errText += dec.decode(chunk, { stream: true });
  })();
  const reader = proc.stdout.getReader();
  const dec = new TextDecoder();
  let buf = "";
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${argv.join(" ")}: exited (${await proc.exited}) before listening\n${errText}`);
    buf += dec.decode(value, { stream: true });
  }
  reader.releaseLock();
  const line = JSON.parse(buf.slice(0, buf.indexOf("\n")));
  if (line.event !== "listening") throw new Error(`expected a listening line first, got ${buf}`);
  return {
    tcp: line.tcp,
    tls: line.tls,
    http: line.http,
    pid: line.pid,
    dataDir: opts.dataDir,
    proc,
    stderr: () => errText,
    async stop() {
      process.kill(line.pid, "SIGTERM");
      return await proc.exited;
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `BIN ARGS...` to completion. */
export async function runCli(bin: string, args: string[], opts: { cwd: string; stdin?: string; env?: Record<string, string> }): Promise<CliResult> {
  const p = Bun.spawn([bin, ...args], {
    cwd: opts.cwd,
    env: opts.env ?? CLEAN_ENV,
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

/** A CLI process of the binary that keeps running (listen, chat, device link): its stdout is read line by line. */
export class CliProcess extends LineProcess {
  constructor(bin: string, args: string[], opts: { cwd: string; env?: Record<string, string> }) {
    super([bin, ...args], { cwd: opts.cwd, env: opts.env ?? CLEAN_ENV });
  }
}

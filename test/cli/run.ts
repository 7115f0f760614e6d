/**
 * Running the CLI as a real subprocess in a test's scratch directory: one-shot
 * commands (`sb`, `ok`) and long-running ones (`Running`, read line by line).
 * The environment has no SWITCHBOARD_* settings unless a test passes them.
 */
import type { Subprocess } from "bun";
import { join } from "node:path";
import { ROOT } from "../helpers/harness.ts";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";

export const MAIN = join(ROOT, "src/cli/main.ts");

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  stdin?: string;
  env?: Record<string, string>;
}

export class Cli {
  /** Long-running processes still alive, killed by `killAll`. */
  readonly running = new Set<Subprocess>();

  constructor(readonly cwd: string) {}

  async sb(args: string[], opts: RunOptions = {}): Promise<Result> {
    const p = Bun.spawn([process.execPath, MAIN, ...args], {
      cwd: this.cwd,
      env: { ...CLEAN_ENV, ...opts.env },
      stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    return { code, stdout, stderr };
  }

  /** Runs and expects exit 0 with nothing on stderr; returns stdout. */
  async ok(args: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.sb(args, opts);
    if (r.code !== 0 || r.stderr !== "") throw new Error(`switchboard ${args.join(" ")}: exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    return r.stdout;
  }

  /** A CLI process that keeps running (listen, chat): its stdout is collected line by line. */
  start(args: string[], env: Record<string, string> = {}): LineProcess {
    return new LineProcess([process.execPath, MAIN, ...args], { cwd: this.cwd, env: { ...CLEAN_ENV, ...env }, track: this.running });
  }

  /** A `listen` that has logged in. */
  async listening(key: string, ...flags: string[]): Promise<LineProcess> {
    const l = this.start(["listen", "--key", key, ...flags]);
    await l.event("ready");
    return l;
  }

  killAll(): void {
    for (const p of this.running) p.kill("SIGKILL");
  }
}

export const jsonLines = (s: string) => s.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));

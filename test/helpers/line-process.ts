/**
 * A process that keeps running (listen, chat, device link, serve): its
 * stdout is collected line by line, and tests wait for the line or the JSON
 * event they expect. Shared by the CLI tests and the compiled-binary tests.
 */
import type { Subprocess } from "bun";

/** The environment without SWITCHBOARD_* settings, so that a developer's shell cannot change what a test runs. */
export const CLEAN_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SWITCHBOARD_"))) as Record<string, string>;

export interface LineProcessOptions {
  cwd: string;
  env: Record<string, string>;
  /** Where to register the process while it runs (for cleanup by the test file). */
  track?: Set<Subprocess>;
}

export class LineProcess {
  readonly proc: Subprocess<"pipe", "pipe", "pipe">;
  readonly lines: string[] = [];
  stderr = "";
  private waiters: { match: (l: string) => boolean; resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  private ended = false;

  constructor(cmd: string[], private opts: LineProcessOptions) {
    this.proc = Bun.spawn(cmd, { cwd: opts.cwd, env: opts.env, stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    opts.track?.add(this.proc);
    void this.pump();
    void new Response(this.proc.stderr).text().then((t) => (this.stderr = t));
  }

  private async pump(): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of this.proc.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push(line);
        for (const w of this.waiters.filter((w) => w.match(line))) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
    if (buf) this.lines.push(buf);
    this.ended = true;
    await this.proc.exited;
    this.opts.track?.delete(this.proc);
    for (const w of this.waiters.splice(0)) {
      w.reject(new Error(`the process ended (exit ${this.proc.exitCode}) before the expected line; stdout:\n${this.lines.join("\n")}\nstderr:\n${this.stderr}`));
    }
  }

  /** The first line (already seen or still to come, after the first `from` lines) that matches. */
  line(match: (l: string) => boolean, from = 0): Promise<string> {
    const seen = this.lines.slice(from).find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.ended) return Promise.reject(new Error(`the process ended before the expected line; stdout:\n${this.lines.join("\n")}`));
    return new Promise((resolve, reject) => this.waiters.push({ match, resolve, reject }));
  }

  /** The first JSON line with this event (and matching the predicate). */
  async event(name: string, pred: (o: any) => boolean = () => true): Promise<any> {
    const l = await this.line((l) => {
      if (!l.startsWith("{")) return false;
      const o = JSON.parse(l);
      return o.event === name && pred(o);
    });
    return JSON.parse(l);
  }

  /** Every JSON line seen so far with this event. */
  events(name: string): any[] {
    return this.lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((o) => o.event === name);
  }

  write(text: string): void {
    this.proc.stdin.write(text);
    this.proc.stdin.flush();
  }

  /** Closes stdin and waits for the exit code. */
  async end(): Promise<number> {
    this.proc.stdin.end();
    return this.proc.exited;
  }

  async signal(sig: NodeJS.Signals): Promise<number> {
    this.proc.kill(sig);
    return this.proc.exited;
  }

  kill(): void {
    try {
      this.proc.kill("SIGKILL");
    } catch {}
  }
}

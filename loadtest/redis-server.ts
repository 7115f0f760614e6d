/**
 * A private redis-server for the load scenarios that spawn a cluster (`cluster`, `presence --nodes`), and the
 * port blocks their nodes listen on. Not a scenario.
 */
import { FatalError } from "./run.ts";

/** A port below the ephemeral range (bun-platform.md pitfall 6), random to keep parallel runs apart; `n` in a row. */
export function portBlock(n: number): number {
  return 20000 + n * Math.floor(Math.random() * Math.floor(10000 / n));
}

/** A private redis-server: no persistence (docs/CLUSTER.md, Limits), on `port`, restartable there. */
export class Redis {
  proc: ReturnType<typeof Bun.spawn> | null = null;
  constructor(readonly port: number, readonly dir: string) {}
  async start(): Promise<void> {
    const bin = Bun.which("redis-server");
    if (!bin) throw new FatalError("redis-server is not installed: the cluster scenario needs the Debian package redis-server (apt-get install redis-server)");
    this.proc = Bun.spawn([bin, "--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir], { stdout: "ignore", stderr: "ignore" });
    const deadline = Date.now() + 10_000;
    while ((await this.cmd("PING")) !== "+PONG") {
      if (Date.now() > deadline) throw new FatalError(`redis-server did not answer on 127.0.0.1:${this.port} within 10 s`);
      await Bun.sleep(50);
    }
  }
  async kill9(): Promise<void> {
    this.proc?.kill("SIGKILL");
    await this.proc?.exited;
  }
  /** One inline command over a fresh socket; the raw reply (one bulk or simple string), or null when Redis is down. */
  async cmd(c: string): Promise<string | null> {
    return new Promise((resolve) => {
      let buf = "";
      Bun.connect({
        hostname: "127.0.0.1", port: this.port,
        socket: {
          open: (s) => void s.write(`${c}\r\n`),
          data: (s, d) => {
            buf += new TextDecoder().decode(d);
            const head = buf.indexOf("\r\n");
            if (head < 0) return;
            // Resolved before end(): end() may run `close` at once.
            if (buf[0] !== "$") {
              resolve(buf.slice(0, head));
              s.end();
              return;
            }
            const len = Number(buf.slice(1, head));
            if (buf.length < head + 2 + len) return;
            resolve(buf.slice(head + 2, head + 2 + len));
            s.end();
          },
          error: () => resolve(null),
          connectError: () => resolve(null),
          close: () => resolve(buf || null),
        },
      }).catch(() => resolve(null));
    });
  }
  /** Calls of every command so far (INFO commandstats). */
  async calls(): Promise<number> {
    return Object.values(await this.byCommand()).reduce((a, b) => a + b, 0);
  }
  /** Calls per command so far (INFO commandstats: `cmdstat_<name>:calls=N,...`). */
  async byCommand(): Promise<Record<string, number>> {
    const info = (await this.cmd("INFO commandstats")) ?? "";
    const out: Record<string, number> = {};
    for (const m of info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) out[m[1]!] = Number(m[2]);
    return out;
  }
}


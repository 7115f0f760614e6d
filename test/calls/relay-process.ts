/**
 * `switchboard relay` as a real process for the calls tests, and the coturn
 * binaries (Debian package coturn) they run against it.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";

export const ROOT = join(import.meta.dir, "../..");
const BUN = join(ROOT, "node_modules/.bin/bun");

export interface RelayProcess {
  proc: LineProcess;
  udp: number;
  http: number;
  url: string;
  metric(name: string): Promise<number>;
}

export async function startRelay(secret: string, extra: string[] = []): Promise<RelayProcess> {
  const proc = new LineProcess([
    BUN, join(ROOT, "src/cli/main.ts"), "relay", "--calls-secret", secret, "--relay-port", "0", "--relay-http-port", "0",
    "--relay-min-port", "0", "--relay-max-port", "0", "--relay-allow-loopback", "true", ...extra,
  ], { cwd: ROOT, env: CLEAN_ENV });
  const ev = await proc.event("listening");
  const url = `http://127.0.0.1:${ev.http}`;
  return {
    proc, udp: ev.udp, http: ev.http, url,
    async metric(name: string) {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text.split("\n").find((l) => l.split(" ")[0] === name);
      return line ? Number(line.split(" ").pop()) : 0;
    },
  };
}

/** Fails naming the Debian package when coturn's binaries are missing (never skips). */
export function requireCoturn(): void {
  for (const bin of ["turnserver", "turnutils_uclient"]) {
    const r = spawnSync("sh", ["-c", `command -v ${bin}`]);
    if (r.status !== 0) throw new Error(`${bin} is not installed: install the Debian package "coturn" (apt-get update && apt-get install -y coturn); .ci/run does this`);
  }
}

export interface UclientResult {
  sent: number;
  received: number;
  lost: number;
  output: string;
}

/** Runs turnutils_uclient to the end and reads its totals. */
export async function uclient(args: string[]): Promise<UclientResult> {
  const p = Bun.spawn(["turnutils_uclient", ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  await p.exited;
  const output = out + err;
  const tot = /tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$/m.exec(output);
  const lost = /Total lost packets (\d+)/.exec(output);
  return { sent: Number(tot?.[1] ?? -1), received: Number(tot?.[2] ?? -1), lost: Number(lost?.[1] ?? -1), output };
}

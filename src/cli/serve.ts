/** `switchboard serve`: runs the server until SIGINT or SIGTERM. */
import { existsSync } from "node:fs";
import { loadConfig } from "../core/config.ts";
import { log } from "../core/log.ts";
import { SwitchboardServer } from "../core/server.ts";
import { DEFAULT_MODULES } from "../modules/index.ts";

export async function serve(flags: Record<string, string>): Promise<void> {
  const config = loadConfig({ flags });
  for (const k of ["cert", "key"] as const) {
    if (config.tls.port >= 0 && config.tls[k] && !existsSync(config.tls[k])) throw new Error(`tls.${k}: file ${config.tls[k]} does not exist`);
  }
  const server = new SwitchboardServer(config);
  for (const m of DEFAULT_MODULES) server.load(m);
  let where;
  try {
    where = await server.listen();
  } catch (e) {
    const ports = `tcp.port ${config.tcp.port}, tls.port ${config.tls.port}, http.port ${config.http.port}`;
    throw new Error(
      `cannot listen (${ports}): ${(e as Error).message}\n  a port may be in use (another switchboard?); choose others with --tcp-port, --tls-port and --http-port (0 picks a free one, -1 turns a listener off)`,
    );
  }
  // One machine-readable line on stdout, so scripts and tests learn the ports (0 = ephemeral).
  console.log(JSON.stringify({ event: "listening", ...where, dataDir: config.dataDir, pid: process.pid }));
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    const hard = setTimeout(() => process.exit(1), 10_000);
    await server.stop();
    clearTimeout(hard);
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

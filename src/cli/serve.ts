/** `switchboard serve`: runs the server until SIGINT or SIGTERM. */
import { loadConfig } from "../core/config.ts";
import { log } from "../core/log.ts";
import { SwitchboardServer } from "../core/server.ts";
import { DEFAULT_MODULES } from "../modules/index.ts";

export async function serve(flags: Record<string, string>): Promise<void> {
  const config = loadConfig({ flags });
  const server = new SwitchboardServer(config);
  for (const m of DEFAULT_MODULES) server.load(m);
  const where = await server.listen();
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

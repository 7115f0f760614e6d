/** `switchboard serve`: runs the server until SIGINT or SIGTERM; SIGHUP reloads its modules. */
import { checkSettings, configFrom, resolveSettings } from "../core/config.ts";
import { log } from "../core/log.ts";
import { SwitchboardServer } from "../core/server.ts";
import { NodeListRefused } from "../core/cluster/members.ts";
import { DEFAULT_MODULES, MODULE_ORDER, SOURCE_MODULES_DIR } from "../modules/index.ts";
import { startCanary } from "../ops/canary.ts";

export async function serve(flags: Record<string, string>): Promise<void> {
  const settings = resolveSettings({ flags });
  checkSettings(settings); // as `config --check` does
  const config = configFrom(settings);
  const server = new SwitchboardServer(config);
  // Modules from a folder on disk, reloadable (modules.dir, or src/modules from source); else the built-in ones of the binary.
  const modulesDir = config.modules.dir || SOURCE_MODULES_DIR;
  if (modulesDir) await server.loadModulesFrom(modulesDir, MODULE_ORDER);
  else for (const m of DEFAULT_MODULES) server.load(m);
  // SIGHUP re-imports changed modules (as `switchboard reload` does); the report goes to the log.
  process.on("SIGHUP", () => {
    log.info("SIGHUP: reloading modules");
    server.reloadModules().catch((e) => log.error("module reload crashed", { err: e as Error, stack: (e as Error).stack }));
  });
  let where;
  try {
    where = await server.listen();
  } catch (e) {
    if (e instanceof NodeListRefused) throw e;
    throw new Error(
      `cannot listen on ${(e as Error).message}\n  another switchboard may run there; choose other ports with --tcp-port, --tls-port and --http-port (0 picks a free one, -1 turns a listener off)`,
    );
  }
  // One machine-readable line on stdout, so scripts and tests learn the ports (0 = ephemeral).
  console.log(JSON.stringify({ event: "listening", ...where, dataDir: config.dataDir, pid: process.pid }));
  // The end-to-end canary behind /readyz (canary.interval; src/ops/canary.ts).
  const canary = startCanary(server, where);
  let stopping = false;
  /**
   * The drain (SIGTERM, SIGINT): /readyz turns 503, the listeners stop,
   * buffered queue writes are committed, every client gets `close
   * server_shutdown` with its own jittered `ra`, then the stores close. Exit
   * 0 when that is done; past shutdown.timeout the process exits anyway, 1.
   */
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const t0 = Date.now();
    log.info("stopping", { signal, timeout: config.shutdown.timeout });
    const hard = setTimeout(() => {
      log.error("shutdown did not finish in time; exiting anyway", { timeout: config.shutdown.timeout });
      process.exit(1);
    }, config.shutdown.timeout * 1000);
    try {
      await canary?.stop();
      await server.stop();
    } catch (e) {
      log.error("shutdown failed", { err: e as Error, stack: (e as Error).stack });
      process.exit(1);
    }
    clearTimeout(hard);
    log.info("stopped", { ms: Date.now() - t0 });
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

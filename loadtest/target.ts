/**
 * Where the load goes: identities (provisioned into the data directory, or
 * read from an --ids file made by `provision`) and the server (spawned and
 * pinned with --spawn, or found with --target).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { cpusAllowed, findListener, spawnServer } from "./proc.ts";
import { UsageError, say, type Run } from "./run.ts";
import { provision, type AccountStoreClass, type Identity } from "./setup.ts";

export interface Target {
  host: string;
  port: number;
  ca?: string;
  /** The port is a WebSocket one (`--transport ws`: ws://host:port/). */
  ws?: boolean;
  pid: number | null;
  dataDir: string | null;
  http: number | null;
  /** A spawned server's stderr file, with its GC log under --server-gc-log (sample.ts gcPauses). */
  log?: string;
}

/** What `provision` writes and `--ids` reads. */
export interface IdsFile {
  created?: string;
  server_id?: string;
  /** The server's development certificate (PEM) when the data directory had one: TLS runs trust it. */
  ca?: string | null;
  identities: Identity[];
}

/** --target HOST:PORT, and the pid of the local process listening there (--server-pid, or found from the port). */
export function parseTarget(run: Run, what = "HOST:PORT"): { host: string; port: number; pid: number | null } {
  const [host, portS] = run.flag("--target")!.split(/:(?=[^:]*$)/);
  const port = Number(portS);
  if (!host || !Number.isInteger(port)) throw new UsageError(`--target must be ${what}`);
  const pid = run.flag("--server-pid") ? Number(run.flag("--server-pid")) : findListener(port);
  if (pid === null) say(`warning: no local process listens on port ${port}; server CPU and RSS will be null`);
  return { host, port, pid };
}

/** Identities for `names` and the server to load, spawned (run.server) or found. */
export async function setup(run: Run, names: string[], defaultServerFlags: string[] = []): Promise<{ target: Target; ids: Identity[] }> {
  let dataDir: string | null;
  let ids: Identity[];
  let idsCa: string | undefined;
  const idsPath = run.flag("--ids");
  const dataDirFlag = run.flag("--data-dir");
  if (idsPath) {
    // Identities made earlier on the server's host (`npm run loadtest -- provision`): no data directory needed here.
    if (run.spawnMode && !dataDirFlag) throw new UsageError("--ids with --spawn needs --data-dir: the data directory the identities were provisioned into");
    const file = JSON.parse(readFileSync(idsPath, "utf8")) as IdsFile;
    if (!Array.isArray(file.identities) || file.identities.length < names.length) {
      throw new UsageError(`this run needs ${names.length} identities; ${idsPath} has ${file.identities?.length ?? 0} (provision more with --count)`);
    }
    ids = file.identities.slice(0, names.length);
    idsCa = file.ca ?? undefined;
    dataDir = dataDirFlag ? resolve(dataDirFlag) : null;
    say(`using ${names.length} of the ${file.identities.length} identities in ${idsPath} (provisioned ${file.created ?? "?"})`);
  } else {
    if (run.spawnMode) {
      if (dataDirFlag) {
        dataDir = resolve(dataDirFlag);
        mkdirSync(dataDir, { recursive: true });
      } else dataDir = run.tmpDir = mkdtempSync(join(tmpdir(), "sb-load-"));
    } else {
      if (!dataDirFlag) {
        throw new UsageError(
          "--target needs identities: either --data-dir DIR (the server's data directory on this machine; the accounts are inserted into it)\n" +
            "  or --ids FILE made on the server's machine with `npm run loadtest -- provision --data-dir DIR --count N --out FILE`",
        );
      }
      dataDir = resolve(dataDirFlag);
      if (!existsSync(join(dataDir, "accounts.db"))) throw new UsageError(`${dataDir}/accounts.db does not exist; is that the server's --data-dir?`);
    }
    const serverMain = run.spawnMode ? run.flag("--server-main") : undefined;
    const Store = serverMain ? ((await import(resolve(dirname(resolve(serverMain)), "../store/accounts.ts"))).SqliteAccountStore as AccountStoreClass) : undefined;
    const p = provision(dataDir, names, Store);
    ids = p.identities;
    say(`provisioned ${names.length} accounts with one device each in ${(p.ms / 1000).toFixed(2)} s (direct insert into ${dataDir}/accounts.db)`);
  }
  let target: Target;
  if (run.spawnMode) {
    const cpus = run.flag("--server-cpus") ?? "0";
    const sf = [...defaultServerFlags, ...run.words("--server-flags")];
    if (defaultServerFlags.length) say(`server flags: ${sf.join(" ")}`);
    const bin = run.flag("--server-bin");
    // JSC writes a line per collection with each stop-the-world pause (p=...ms) to stderr, that is the server's log.
    const gcEnv: Record<string, string> = run.bool("--server-gc-log") ? { BUN_JSC_logGC: "1" } : {};
    const bunFlags = run.words("--server-bun-flags");
    if (run.bool("--probe")) {
      // idle --probe: loadtest/probe.ts in the server, writing its readings into the data directory.
      const dir = join(dataDir!, "probe");
      mkdirSync(dir, { recursive: true });
      gcEnv.SB_PROBE_DIR = dir;
      bunFlags.push("--preload", join(import.meta.dir, "probe.ts"));
    }
    const server = (run.server = await spawnServer(dataDir!, cpus || null, sf, bunFlags, run.flag("--server-main"), bin, gcEnv));
    const port = run.transport === "tls" ? server.tls : run.transport === "ws" ? server.ws : server.tcp;
    target = { host: "127.0.0.1", port, pid: server.pid, dataDir, http: server.http, log: server.logPath };
    say(`server pid ${server.pid} (${bin ? `binary ${bin}` : "from source"}) on ${run.transport} port ${port} (http ${server.http}), pinned to CPUs ${cpusAllowed(server.pid)}, log ${server.logPath}`);
    if (run.bool("--server-hog")) {
      // Another process on the server's core, for the inbound pacing's shared-core property (listener.ts, nextBudget):
      // the shell's builtin loop, which stops once this process is gone (kill -0 on its parent fails).
      if (!cpus) throw new UsageError("--server-hog needs the server pinned (--server-cpus LIST)");
      run.hog = Bun.spawn(["taskset", "-c", cpus, "sh", "-c", "while kill -0 $PPID 2>/dev/null; do :; done"], { stdout: "ignore", stderr: "ignore" });
      say(`busy loop pid ${run.hog.pid} pinned to CPUs ${cpus} beside the server (--server-hog)`);
    }
  } else {
    const { host, port, pid } = parseTarget(run);
    target = { host, port, pid, dataDir, http: run.flag("--http-port") ? run.num("--http-port", 0, 1) : null };
    if (pid !== null) say(`server pid ${pid} (CPUs ${cpusAllowed(pid)})`);
  }
  if (run.transport === "ws") target.ws = true;
  if (run.transport === "tls") {
    const caFlag = run.flag("--ca");
    if (caFlag) target.ca = readFileSync(caFlag, "utf8");
    else if (dataDir) target.ca = readFileSync(join(dataDir, "tls", "dev-cert.pem"), "utf8");
    else if (idsCa) target.ca = idsCa;
    else throw new UsageError("--transport tls needs the server's certificate: --ca FILE (or --data-dir DIR, or an --ids file provisioned after the server made its certificate)");
  }
  return { target, ids };
}

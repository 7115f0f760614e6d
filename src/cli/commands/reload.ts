/**
 * `switchboard reload`: asks the running server (POST /admin/reload on its HTTP
 * port, loopback only) to re-import its changed modules, and prints what became
 * of each. Exit 1 if any module failed (it keeps running its old version).
 * Nothing of the server is imported here: a module that does not even parse is
 * the server's to refuse, and this command's to report.
 */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import type { ModuleResult } from "../../core/loader.ts";
import { httpBase } from "../../ops/trace-cli.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "reload",
  section: "server",
  synopsis: "reload [--config FILE] [--http-port N] [--json]",
  summary: `re-import the running server's changed modules (as SIGHUP does) and
print each one's result: kept, reloaded OLD -> NEW, or failed (why);
exit 1 if any failed (it keeps its running version)`,
  usage: "switchboard reload [--config FILE] [--http-port N] [--json]",
  flags: [...CONFIG_FLAGS, "--json"],
  async run({ flags, json }) {
    let base: string;
    try {
      base = httpBase(flags, "reload");
    } catch (e) {
      const m = (e as Error).message;
      throw new Error(/-1/.test(m) ? `${m}\n  turn it on, or send the server SIGHUP (kill -HUP PID) and read the result in its log` : m);
    }
    const url = `${base}/admin/reload`;
    let res: Response;
    try {
      res = await fetch(url, { method: "POST" });
    } catch (e) {
      throw new Error(`cannot reach the server at ${url}: ${(e as Error).message}\n  is it running? Pass the --config, or --http-port, it runs with`);
    }
    const body = await res.text();
    if (res.status === 403) throw new Error(`the server refused: ${body.trim()}\n  run switchboard reload on the server's machine, with http.host a loopback address or a wildcard`);
    if (!res.ok) throw new Error(`the server answered ${res.status} at ${url}: ${body.trim()}`);
    const report = JSON.parse(body) as { ok: boolean; dir: string | null; modules: ModuleResult[] };
    if (json) out(report);
    else printReport(report.modules);
    return report.ok ? 0 : 1;
  },
});

function printReport(modules: ModuleResult[]): void {
  const w = Math.max(...modules.map((m) => m.module.length), 6);
  for (const m of modules) {
    const name = m.module.padEnd(w);
    switch (m.result) {
      case "kept":
        console.log(`${name}  kept      ${m.version}${m.note ? `  (${m.note})` : ""}`);
        break;
      case "reloaded":
        console.log(`${name}  reloaded  ${m.from} -> ${m.to}`);
        break;
      case "loaded":
        console.log(`${name}  loaded    ${m.version} (new)`);
        break;
      case "failed":
        console.log(`${name}  failed    ${m.stage}: ${m.error}`);
        console.log(`${" ".repeat(w)}            ${m.version ? `still running ${m.version}` : "not running"}`);
        break;
    }
  }
  if (modules.length === 0) console.log("no modules loaded");
}

/**
 * `provision`: not a load. Writes N identities into a data directory (on the
 * server's machine) and a file for --ids, so that a run against a --target
 * needs no access to its data directory.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { UsageError, say, type Outcome, type Run } from "../run.ts";
import type { Scenario } from "../scenario.ts";
import { provision as provisionInto, runTag } from "../setup.ts";
import type { IdsFile } from "../target.ts";

async function provision(run: Run): Promise<Outcome> {
  const dir = run.flag("--data-dir");
  const out = run.flag("--out");
  if (!dir || !out || !run.flag("--count")) throw new UsageError("provision needs --data-dir DIR --count N --out FILE");
  const n = run.num("--count", 1, 1);
  const dataDir = resolve(dir);
  mkdirSync(dataDir, { recursive: true });
  const tag = runTag();
  const p = provisionInto(dataDir, Array.from({ length: n }, (_, i) => `lt${tag}-${i}`));
  const certPath = join(dataDir, "tls", "dev-cert.pem");
  const file: IdsFile = {
    created: new Date().toISOString(), server_id: p.serverId, ca: existsSync(certPath) ? readFileSync(certPath, "utf8") : null, identities: p.identities,
  };
  writeFileSync(out, JSON.stringify(file), { mode: 0o600 });
  say(`provisioned ${n} accounts (lt${tag}-0 .. lt${tag}-${n - 1}) with one device each in ${dataDir} in ${(p.ms / 1000).toFixed(2)} s; identities in ${out}`);
  say(`run against that server with: npm run loadtest -- SCENARIO --target HOST:PORT --ids ${out} ...`);
  return { result: { scenario: "provision", params: { count: n, data_dir: dataDir, out }, accounts: n, seconds: Math.round(p.ms) / 1000 }, code: 0 };
}

export const PROVISION: Scenario = {
  name: "provision",
  summary: "not a load: writes N identities into a data directory (on the server's machine) and a file\nfor --ids, so that a run against a --target needs no access to its data directory",
  server: false,
  flags: [["--data-dir DIR --count N --out FILE   (accounts lt<tag>-<i>, one device each; FILE gets the private seeds, mode 0600)", ""]],
  run: provision,
};

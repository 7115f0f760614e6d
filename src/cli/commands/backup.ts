/**
 * `switchboard backup DIR`: a consistent copy of every database of the data
 * directory, while the server runs or not. The CLI reads each file with its
 * own read-only connection (WAL snapshot) rather than asking the server: the
 * copy then costs the server's event loop nothing (src/store/backup.ts).
 */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { loadConfig } from "../../core/config.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "backup",
  section: "server",
  synopsis: "backup DIR [--data-dir DIR] [--json]",
  summary: `copy every database of the data directory into DIR, consistently,
while the server runs (every message acknowledged before it began is in it)`,
  usage: "switchboard backup DIR [--config FILE] [--data-dir DIR] [--json]",
  flags: [...CONFIG_FLAGS, "--json"],
  args: [1, 1],
  async run({ flags, rest, json }) {
    const { backupDataDir } = await import("../../store/backup.ts");
    const dataDir = loadConfig({ flags }).dataDir;
    const t0 = performance.now();
    const m = backupDataDir(dataDir, rest[0]!);
    const ms = Math.round(performance.now() - t0);
    const bytes = m.files.reduce((s, f) => s + f.bytes, 0);
    const dbs = m.files.filter((f) => f.kind === "sqlite");
    if (json) out({ ...m, dest: rest[0], ms });
    else {
      for (const f of dbs) console.log(`${f.path.padEnd(24)} schema ${f.schema}  ${f.bytes} bytes`);
      console.log(`backed up ${dataDir} into ${rest[0]}: ${dbs.length} databases and ${m.files.length - dbs.length} other files, ${bytes} bytes, in ${ms} ms`);
    }
    return 0;
  },
});

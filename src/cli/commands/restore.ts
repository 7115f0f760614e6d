/** `switchboard restore DIR`: puts a backup back, onto a stopped server (src/store/backup.ts). */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { loadConfig } from "../../core/config.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "restore",
  section: "server",
  synopsis: "restore DIR [--data-dir DIR] [--json]",
  summary: `replace the data directory's files with the backup in DIR (the server
must be stopped); the files it replaces move to DATA_DIR/pre-restore-TIME/`,
  usage: "switchboard restore DIR [--config FILE] [--data-dir DIR] [--json]",
  flags: [...CONFIG_FLAGS, "--json"],
  args: [1, 1],
  async run({ flags, rest, json }) {
    const { restoreDataDir } = await import("../../store/backup.ts");
    const dataDir = loadConfig({ flags }).dataDir;
    const r = restoreDataDir(rest[0]!, dataDir);
    if (json) out({ dataDir, from: rest[0], created: r.manifest.created, files: r.manifest.files.length, setAside: r.setAside });
    else {
      console.log(`restored ${r.manifest.files.length} files of the backup of ${r.manifest.created} into ${dataDir}`);
      if (r.setAside) console.log(`its earlier files are in ${r.setAside} (delete them once the server runs well)`);
    }
    return 0;
  },
});

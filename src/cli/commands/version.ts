/** `switchboard version` (and `switchboard --version`): this program's version; `status` shows the running server's. */
import { defineCommand } from "../command.ts";
import { out } from "../util.ts";
import pkg from "../../../package.json" with { type: "json" };

export default defineCommand({
  name: "version",
  section: "server",
  synopsis: "version [--json]",
  summary: "this switchboard's version and its Bun's (`status` shows the running server's)",
  usage: "switchboard version [--json]",
  flags: ["--json"],
  async run({ json }) {
    if (json) out({ version: pkg.version, bun: Bun.version });
    else console.log(`switchboard ${pkg.version} (bun ${Bun.version})`);
    return 0;
  },
});

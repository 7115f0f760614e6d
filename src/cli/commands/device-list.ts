/** `switchboard device list`: the devices of this account (or of --user NAME). */
import { CONNECTION, defineCommand } from "../command.ts";
import { withClient } from "../connect.ts";
import { localTime, out } from "../util.ts";

export default defineCommand({
  name: "device list",
  section: "devices",
  synopsis: "device list --key FILE [--user NAME]",
  summary: "the devices of your account (or of NAME), with their key versions",
  usage: "switchboard device list --key FILE [--user NAME] [--json]",
  flags: [...CONNECTION, "--key", "--user", "--json"],
  run: ({ flags: f, json, usage }) =>
    withClient(f, usage, async (client) => {
      const r = await client.request<{ u: string; devices: { d: number; name?: string; created: number }[] }>("devices", f["--user"] ? { u: f["--user"] } : {});
      if (json) out(r);
      else {
        for (const d of r.devices) {
          const mine = d.d === client.device && r.u === client.account ? "  (this one)" : "";
          console.log(`${r.u} device ${d.d}${d.name !== undefined ? ` "${d.name}"` : ""}, since ${localTime(d.created)}${mine}`);
        }
      }
      return 0;
    }),
});

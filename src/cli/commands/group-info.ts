/** `switchboard group info GROUP`: its name and members. */
import { CONNECTION, defineCommand } from "../command.ts";
import { withClient } from "../connect.ts";
import { groupArg, localTime, out } from "../util.ts";

export default defineCommand({
  name: "group info",
  section: "groups",
  synopsis: "group info GROUP --key FILE",
  summary: "its name and members",
  usage: "switchboard group info GROUP --key FILE [--json]",
  flags: [...CONNECTION, "--key", "--json"],
  args: [1, 1],
  run: ({ flags: f, rest, json, usage }) =>
    withClient(f, usage, async (client) => {
      const info = await client.groupInfo(groupArg(rest[0]!, usage));
      if (json) out(info);
      else {
        console.log(`${info.g} "${info.name}", created ${localTime(info.created)} by ${info.creator}`);
        for (const m of info.members) console.log(`  ${m.u}${m.admin ? " (admin)" : ""}${m.u === client.account ? "  (you)" : ""}`);
      }
      return 0;
    }),
});

/** `switchboard group leave GROUP`. */
import { CONNECTION, defineCommand } from "../command.ts";
import { withClient } from "../connect.ts";
import { groupArg, out } from "../util.ts";

export default defineCommand({
  name: "group leave",
  section: "groups",
  synopsis: "group leave GROUP --key FILE",
  summary: "",
  usage: "switchboard group leave GROUP --key FILE [--json]",
  flags: [...CONNECTION, "--key", "--json"],
  args: [1, 1],
  run: ({ flags: f, rest, json, usage }) =>
    withClient(f, usage, async (client) => {
      const g = groupArg(rest[0]!, usage);
      await client.leaveGroup(g);
      if (json) out({ group: g, left: true });
      else console.log(`left ${g}`);
      return 0;
    }),
});

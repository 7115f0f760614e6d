/** `switchboard group create NAME [MEMBER...]`: a group with you as its admin; prints its id. */
import { CONNECTION, defineCommand } from "../command.ts";
import { withClient } from "../connect.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "group create",
  section: "groups",
  synopsis: "group create NAME [MEMBER...] --key FILE",
  summary: "create a group with you as its admin; prints its id",
  usage: "switchboard group create NAME [MEMBER...] --key FILE [--json]",
  flags: [...CONNECTION, "--key", "--json"],
  args: [1, Infinity],
  run: ({ flags: f, rest, json, usage }) =>
    withClient(f, usage, async (client) => {
      const [title, ...members] = rest as [string, ...string[]];
      const r = await client.createGroup(title, members);
      if (json) out({ group: r.g, name: title, members: [client.account, ...members] });
      else {
        console.log(`created group ${r.g} "${title}" with ${[client.account, ...members].join(", ")}; you are its admin`);
        console.log(`write to it with:\n  switchboard chat --key ${f["--key"]} --to '${r.g}'`);
      }
      return 0;
    }),
});

/** `switchboard group list`: the groups of this account. */
import { CONNECTION, defineCommand } from "../command.ts";
import { withClient } from "../connect.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "group list",
  section: "groups",
  synopsis: "group list --key FILE",
  summary: "your groups",
  usage: "switchboard group list --key FILE [--json]",
  flags: [...CONNECTION, "--key", "--json"],
  run: ({ flags: f, json, usage }) =>
    withClient(f, usage, async (client) => {
      const r = await client.groups();
      if (json) out(r);
      else {
        for (const g of r.groups) console.log(`${g.g} "${g.name}", ${g.n} member${g.n === 1 ? "" : "s"}`);
        if (r.groups.length === 0) console.log("no groups");
      }
      return 0;
    }),
});

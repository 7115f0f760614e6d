/** `group add` and `group remove`: one change of membership by an admin (the two commands differ in the verb only). */
import { CONNECTION, defineCommand, type Command } from "../command.ts";
import { withClient } from "../connect.ts";
import { groupArg, out } from "../util.ts";

export function membersCommand(op: "add" | "remove"): Command {
  return defineCommand({
    name: `group ${op}`,
    section: "groups",
    synopsis: `group ${op} GROUP MEMBER... --key FILE`,
    summary: `${op} members (admins)`,
    usage: `switchboard group ${op} GROUP MEMBER... --key FILE [--json]`,
    flags: [...CONNECTION, "--key", "--json"],
    args: [2, Infinity],
    run: ({ flags: f, rest, json, usage }) =>
      withClient(f, usage, async (client) => {
        const g = groupArg(rest[0]!, usage);
        const r = op === "add" ? await client.addMembers(g, rest.slice(1)) : await client.removeMembers(g, rest.slice(1));
        if (json) out({ group: g, [op === "add" ? "added" : "removed"]: r.m });
        else console.log(`${op === "add" ? "added to" : "removed from"} ${g}: ${r.m.join(", ")}`);
        return 0;
      }),
  });
}

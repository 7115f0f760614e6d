/** `switchboard block NAME` and `switchboard unblock NAME`. */
import { CONNECTION, defineCommand, type Command } from "../command.ts";
import { withClient } from "../connect.ts";
import { out } from "../util.ts";

export function blockCommand(op: "block" | "unblock"): Command {
  return defineCommand({
    name: op,
    section: "contacts",
    synopsis: `${op} NAME --key FILE`,
    summary: op === "block" ? "no messages, group invitations, typing or presence between you and NAME" : "undo block",
    usage: `switchboard ${op} NAME --key FILE [--json]`,
    flags: [...CONNECTION, "--key", "--json"],
    args: [1, 1],
    run: ({ flags: f, rest, json, usage }) =>
      withClient(f, usage, async (client) => {
        if (op === "block") await client.block(rest[0]!);
        else await client.unblock(rest[0]!);
        if (json) out({ [op === "block" ? "blocked" : "unblocked"]: rest[0] });
        else console.log(`${op === "block" ? "blocked" : "unblocked"} ${rest[0]}`);
        return 0;
      }),
  });
}

export default blockCommand("block");

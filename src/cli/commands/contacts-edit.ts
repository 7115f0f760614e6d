/** `contacts add` and `contacts remove`: the account's contact list on the server (the two differ in the verb only). */
import { CONNECTION, defineCommand, type Command } from "../command.ts";
import { withClient } from "../connect.ts";
import { out, plural } from "../util.ts";

export function contactsCommand(op: "add" | "remove"): Command {
  return defineCommand({
    name: `contacts ${op}`,
    section: "contacts",
    synopsis: `contacts ${op} NAME... --key FILE`,
    summary: op === "add" ? "add accounts to your contacts (they may see what your privacy shows contacts)" : "remove accounts from your contacts",
    usage: `switchboard contacts ${op} NAME... --key FILE [--json]`,
    flags: [...CONNECTION, "--key", "--json"],
    args: [1, 256],
    run: ({ flags: f, rest, json, usage }) =>
      withClient(f, usage, async (client) => {
        const r = op === "add" ? await client.addContacts(rest) : await client.removeContacts(rest);
        if (json) out({ [op === "add" ? "added" : "removed"]: rest, contacts: r.n });
        else console.log(`${op === "add" ? "added" : "removed"} ${rest.join(", ")}; ${r.n} ${plural(r.n, "contact")}`);
        return 0;
      }),
  });
}

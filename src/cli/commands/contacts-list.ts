/** `switchboard contacts list`: the account's contacts, and whom it blocked. */
import { CONNECTION, defineCommand } from "../command.ts";
import { withClient } from "../connect.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "contacts list",
  section: "contacts",
  synopsis: "contacts list --key FILE",
  summary: "your contacts, and the accounts you blocked",
  usage: "switchboard contacts list --key FILE [--json]",
  flags: [...CONNECTION, "--key", "--json"],
  run: ({ flags: f, json, usage }) =>
    withClient(f, usage, async (client) => {
      const [contacts, blocked] = await Promise.all([client.contacts(), client.blocked()]);
      if (json) out({ contacts, blocked });
      else {
        console.log(contacts.length ? contacts.join("\n") : "no contacts");
        if (blocked.length) console.log(`blocked: ${blocked.join(", ")}`);
      }
      return 0;
    }),
});

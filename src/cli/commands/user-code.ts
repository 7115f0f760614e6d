/** `switchboard user code NAME`: a new enrollment code for an existing account (the earlier ones stop working). */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { issueCode } from "../accounts.ts";

export default defineCommand({
  name: "user code",
  section: "accounts",
  synopsis: "user code NAME",
  summary: "print a new enrollment code for an existing account (earlier codes stop working)",
  usage: "switchboard user code NAME [--json] [--data-dir DIR | --config FILE]",
  flags: [...CONFIG_FLAGS, "--json"],
  args: [1, 1],
  run: ({ flags, rest, json }) => issueCode("user code", rest[0]!, flags, json),
});

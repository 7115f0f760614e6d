/** `switchboard user add NAME`: creates an account and prints its first enrollment code. */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { issueCode } from "../accounts.ts";

export default defineCommand({
  name: "user add",
  section: "accounts",
  synopsis: "user add NAME",
  summary: "create an account; prints a one-time enrollment code",
  usage: "switchboard user add NAME [--json] [--data-dir DIR | --config FILE]",
  flags: [...CONFIG_FLAGS, "--json"],
  args: [1, 1],
  run: ({ flags, rest, json }) => issueCode("user add", rest[0]!, flags, json),
});

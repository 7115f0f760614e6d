/** `switchboard serve`: the server itself. Imported lazily: no other command loads server code or its modules. */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";

export default defineCommand({
  name: "serve",
  section: "server",
  synopsis: "serve [--config FILE] [--SETTING VALUE ...]",
  summary: "run the server until SIGINT or SIGTERM",
  usage: "switchboard serve [--config FILE] [--SETTING VALUE ...]   (settings: switchboard config)",
  flags: CONFIG_FLAGS,
  notes: "SIGHUP re-imports changed modules (as `switchboard reload` does). Every setting is a flag: `switchboard config` lists them.",
  async run({ flags }) {
    const { serve } = await import("../serve.ts");
    await serve(flags);
    return -1; // keeps running
  },
});

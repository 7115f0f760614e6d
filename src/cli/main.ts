#!/usr/bin/env bun
/** The `switchboard` command: server, administration and a terminal client in one binary. */
import { checkFlags, parseArgs, UsageError } from "./args.ts";
import { serve } from "./serve.ts";
import { runClientCommand, CLIENT_COMMANDS, CLIENT_USAGE } from "./commands.ts";
import { CONFIG_FLAGS, effectiveToml, resolveSettings, settingsTable } from "../core/config.ts";

const USAGE = `switchboard: a relay messaging server and its terminal client

usage: switchboard COMMAND [ARGUMENTS] [FLAGS]

server
  serve [--config FILE] [--SETTING VALUE ...]
                                     run the server until SIGINT or SIGTERM
  reload [--config FILE] [--http-port N] [--json]
                                     re-import the running server's changed modules (as SIGHUP does) and
                                     print each one's result: kept, reloaded OLD -> NEW, or failed (why);
                                     exit 1 if any failed (it keeps its running version)
  trace [ACCOUNT] CID [--config FILE] [--http-port N] [--json]
                                     the delivery trace of a recent message (client id CID, sent by ACCOUNT):
                                     accepted, durable, pushed and acked per device, read; from the running server
  config                             list every setting: TOML key, flag, environment variable, default
  config --check [--config FILE] [--SETTING VALUE ...]
                                     print the configuration that serve would use, and where each value comes from
  Every setting can be given in the TOML file of --config (or SWITCHBOARD_CONFIG), as an
  environment variable (SWITCHBOARD_TCP_PORT) or as a flag (--tcp-port); flag > environment > file.

${CLIENT_USAGE}

More in README.md; the wire protocol is in docs/PROTOCOL.md.`;

const CONFIG_CHECK_FLAGS: ReadonlySet<string> = new Set([...CONFIG_FLAGS, "--check"]);

async function main(argv: string[]): Promise<number> {
  try {
    const args = parseArgs(argv);
    const [cmd, sub] = args.positionals;
    if (cmd === undefined && !args.flags["--help"] && !args.flags["-h"]) {
      console.error(USAGE);
      return 2;
    }
    if (cmd === undefined || cmd === "help" || args.flags["--help"] || args.flags["-h"]) {
      console.log(USAGE);
      return 0;
    }
    if (cmd === "serve") {
      checkFlags("serve", args.flags, CONFIG_FLAGS, "switchboard serve [--config FILE] [--SETTING VALUE ...]   (settings: switchboard config)");
      if (args.positionals.length > 1) throw new UsageError(`serve: unexpected argument ${JSON.stringify(args.positionals[1])}`);
      await serve(args.flags);
      return -1; // keeps running
    }
    if (cmd === "config") {
      checkFlags("config", args.flags, CONFIG_CHECK_FLAGS, "switchboard config [--check [--config FILE] [--SETTING VALUE ...]]");
      if (args.positionals.length > 1) throw new UsageError(`config: unexpected argument ${JSON.stringify(args.positionals[1])}`);
      const { "--check": check, ...rest } = args.flags;
      if (!check) {
        if (Object.keys(rest).length) throw new UsageError(`config: ${Object.keys(rest)[0]} is read only with --check`);
        console.log(settingsTable());
        return 0;
      }
      const r = resolveSettings({ flags: rest });
      console.log(`# effective configuration${r.file ? ` (file ${r.file})` : " (no configuration file)"}`);
      console.log(effectiveToml(r));
      return 0;
    }
    const name = sub !== undefined && CLIENT_COMMANDS.has(`${cmd} ${sub}`) ? `${cmd} ${sub}` : cmd;
    if (CLIENT_COMMANDS.has(name)) return await runClientCommand(name, args);
    if (cmd === "user" || cmd === "device" || cmd === "group") {
      const subs = [...CLIENT_COMMANDS].filter((c) => c.startsWith(`${cmd} `)).map((c) => c.split(" ")[1]);
      throw new UsageError(sub === undefined ? `${cmd} needs a subcommand: ${subs.join(", ")}` : `unknown command ${cmd} ${sub}; ${cmd} has ${subs.join(", ")}`);
    }
    console.error(`switchboard: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
    return 2;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`switchboard: ${e.message}`);
      console.error(e.usage ? `usage: ${e.usage}` : "run `switchboard --help` for usage");
      return 2;
    }
    console.error(`switchboard: ${(e as Error).message}`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exit(code);

#!/usr/bin/env bun
/** The `switchboard` command: server, administration and a terminal client in one binary. */
import { parseArgs } from "./args.ts";
import { serve } from "./serve.ts";
import { runClientCommand, CLIENT_COMMANDS, CLIENT_USAGE } from "./commands.ts";

const USAGE = `switchboard: a relay messaging server

usage:
  switchboard serve [--config FILE] [--data-dir DIR] [--tcp-port N] [--tls-port N] [--http-port N] ...
${CLIENT_USAGE}
  switchboard config              print every setting with its flag, variable and default

Every setting of the configuration file can be given as a flag (--tcp-port) or an
environment variable (SWITCHBOARD_TCP_PORT). See README.md.`;

async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    console.error(`switchboard: ${(e as Error).message}`);
    return 2;
  }
  const [cmd, sub] = args.positionals;
  if (!cmd || args.flags["--help"] || args.flags["-h"] || cmd === "help") {
    console.log(USAGE);
    return cmd ? 0 : 2;
  }
  try {
    if (cmd === "serve") {
      await serve(args.flags);
      return -1; // keeps running
    }
    if (cmd === "config") {
      const { settingsTable } = await import("../core/config.ts");
      console.log(settingsTable());
      return 0;
    }
    const name = sub && CLIENT_COMMANDS.has(`${cmd} ${sub}`) ? `${cmd} ${sub}` : cmd;
    if (CLIENT_COMMANDS.has(name)) return await runClientCommand(name, args);
    console.error(`switchboard: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
    return 2;
  } catch (e) {
    console.error(`switchboard: ${(e as Error).message}`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exit(code);

#!/usr/bin/env bun
/**
 * The `switchboard` command: server, administration and a terminal client in
 * one binary. Only `serve` loads the server (lazily): every other command
 * works even when a server module does not parse.
 */
import { parseArgs, UsageError } from "./args.ts";
import { commandHelp, findCommand, globalHelp, runCommand } from "./registry.ts";
import pkg from "../../package.json" with { type: "json" };

async function main(argv: string[]): Promise<number> {
  try {
    const args = parseArgs(argv);
    const help = args.flags["--help"] === "true" || args.flags["-h"] === "true";
    const [cmd] = args.positionals;
    if (cmd === undefined && args.flags["--version"] === "true") {
      console.log(`switchboard ${pkg.version}`);
      return 0;
    }
    if (cmd === undefined && !help) {
      console.error(globalHelp());
      return 2;
    }
    if (cmd === undefined || cmd === "help") {
      // `switchboard help send` is `switchboard send --help`.
      if (cmd === "help" && args.positionals.length > 1) console.log(commandHelp(findCommand(args.positionals.slice(1))));
      else console.log(globalHelp());
      return 0;
    }
    const c = findCommand(args.positionals);
    if (help) {
      console.log(commandHelp(c));
      return 0;
    }
    return await runCommand(c, args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`switchboard: ${e.message}`);
      console.error(e.usage ? `usage: ${e.usage}` : (e.hint ?? "run `switchboard --help` for usage"));
      return 2;
    }
    console.error(`switchboard: ${(e as Error).message}`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exit(code);

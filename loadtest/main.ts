/**
 * Switchboard load generator: `npm run loadtest -- SCENARIO [flags]`.
 *
 * The coordinator (this process) provisions accounts straight into the
 * data directory (or takes identities from an --ids file made by
 * `provision`), starts the server (--spawn, from source or --server-bin,
 * pinned to one core) or finds it (--target), spreads the client
 * connections over worker processes (loadtest/worker.ts; storm-worker.ts for
 * login-storm and reconnect-storm; groups-worker.ts for groups; pinned to
 * the other core), drives the phases and reads the server's CPU time and RSS
 * from /proc around the measured phase. `http` runs autocannon in this
 * process. Human-readable lines go to stdout; the last line is one JSON object.
 *
 * Each scenario is a file in ./scenarios/, listed in ./scenarios/index.ts
 * (which also makes --help). It returns its result line and exit status, or
 * throws; this file is the only place a run exits.
 *
 * Exit status: 0 ok; 1 an acknowledged message was lost; 3 duplicates or
 * out-of-order deliveries; 4 logins failed or connections dropped; 2 usage;
 * 5 the run could not go on (with an `error` JSON line); 130 interrupted.
 */
import { checkFlags, parseArgs } from "../src/cli/args.ts";
import { FatalError, Interrupted, Run, UsageError, type Outcome } from "./run.ts";
import { BOOLEAN_FLAGS, VERBATIM_FLAGS } from "./scenario.ts";
import { KNOWN_FLAGS, SCENARIOS, USAGE } from "./scenarios/index.ts";

async function main(argv: string[]): Promise<number> {
  let run: Run | null = null;
  try {
    const args = parseArgs(argv, { booleans: BOOLEAN_FLAGS, verbatim: VERBATIM_FLAGS });
    checkFlags("loadtest", args.flags, KNOWN_FLAGS, USAGE);
    const name = args.positionals[0];
    if (!name || args.flags["--help"] || args.flags["-h"]) {
      console.log(USAGE);
      return name ? 0 : 2;
    }
    const scenario = SCENARIOS.find((s) => s.name === name);
    if (!scenario) throw new UsageError(`unknown scenario ${JSON.stringify(name)}`, USAGE);
    if (scenario.server && (args.flags["--spawn"] === "true") === (args.flags["--target"] !== undefined)) {
      throw new UsageError("give exactly one of --spawn and --target HOST:PORT", USAGE);
    }
    const r = (run = new Run(name, args.flags));
    if (r.transport === "ws" && !scenario.ws) throw new UsageError(`--transport ws is for idle and pairs; ${name} runs over tcp or tls`, USAGE);
    process.on("SIGINT", () => r.fail(new Interrupted("interrupted")));
    const running = scenario.run(r);
    running.catch(() => {}); // when run.failed wins the race, the scenario's own end no longer matters
    const out: Outcome = await Promise.race([running, r.failed]);
    await r.shutdown();
    // Exactly one JSON line, last.
    console.log(JSON.stringify(out.result));
    return out.code;
  } catch (e) {
    if (e instanceof UsageError) {
      // checkFlags() names the command itself.
      const msg = e.message.startsWith("loadtest: ") ? e.message : `loadtest: ${e.message}`;
      console.error(`${msg}${e.usage ? `\n\n${e.usage}` : ""}`);
      await run?.shutdown();
      return 2;
    }
    if (e instanceof Interrupted) {
      console.error("loadtest: interrupted");
      await run?.shutdown();
      return 130;
    }
    const msg = (e as Error).message ?? String(e);
    console.error(e instanceof FatalError ? `loadtest: FATAL: ${msg}` : `loadtest: ${(e as Error).stack ?? e}`);
    await run?.shutdown();
    // Still exactly one JSON line at the end, so scripts can tell a failed run from a missing one.
    console.log(JSON.stringify({ scenario: run?.scenario, params: { ...run?.flags }, error: msg }));
    return 5;
  }
}

process.exit(await main(process.argv.slice(2)));

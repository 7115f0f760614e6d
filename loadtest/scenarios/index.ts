/** Every scenario of the load generator, in the order --help lists them. */
import { COMMON_FLAGS, SERVER_FLAGS, flagNames, section, type Scenario } from "../scenario.ts";
import { CALLS } from "./calls.ts";
import { CLUSTER } from "./cluster.ts";
import { CRASH } from "./crash.ts";
import { GROUPS } from "./groups.ts";
import { HTTP } from "./http.ts";
import { IDLE } from "./idle.ts";
import { LOGIN_STORM } from "./login-storm.ts";
import { MEDIA } from "./media.ts";
import { OFFLINE } from "./offline.ts";
import { PAIRS } from "./pairs.ts";
import { PRESENCE } from "./presence.ts";
import { PROVISION } from "./provision.ts";
import { PUSH } from "./push.ts";
import { RECONNECT_STORM } from "./reconnect-storm.ts";

export const SCENARIOS: readonly Scenario[] = [IDLE, PAIRS, OFFLINE, CRASH, LOGIN_STORM, RECONNECT_STORM, HTTP, GROUPS, PRESENCE, PROVISION, PUSH, CLUSTER, MEDIA, CALLS];

/** Every flag some scenario takes (a scenario ignores the others' flags, as it always has; crash refuses them). */
export const KNOWN_FLAGS: ReadonlySet<string> = new Set([...flagNames(SERVER_FLAGS), ...flagNames(COMMON_FLAGS), ...SCENARIOS.flatMap((s) => flagNames(s.flags))]);

export const USAGE = [
  "usage: npm run loadtest -- SCENARIO [flags]",
  ["scenarios:", ...SCENARIOS.map((s) => s.summary.split("\n").map((l, i) => `  ${(i ? "" : s.name).padEnd(17)}${l}`).join("\n"))].join("\n"),
  section("where the server is", SERVER_FLAGS),
  section("common", COMMON_FLAGS),
  ...SCENARIOS.map((s) => section(s.name, s.flags, s.notes)),
].join("\n\n") + "\n";

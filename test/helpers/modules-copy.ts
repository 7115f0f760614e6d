/**
 * A copy of src/modules for a test server (`--modules-dir`) in which one module registers more: a test-only iq
 * appended to that module's index.ts, so that the rest of the server runs its real modules unchanged.
 */
import { appendFileSync, cpSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./harness.ts";

/**
 * Copies src/modules to `<dir>/modules`; module `mod` (its exported const, e.g. `keys`) also returns
 * `registrations`, the source of an array expression in which `ctx` is its ModuleContext. `by` names the test
 * file in the appended comment. Returns the folder.
 */
export function modulesWith(dir: string, mod: string, by: string, registrations: string): string {
  const out = join(dir, "modules");
  cpSync(join(ROOT, "src/modules"), out, { recursive: true });
  appendFileSync(
    join(out, mod, "index.ts"),
    `
// Appended by ${by}.
{
  const start = ${mod}.start;
  ${mod}.start = (ctx) => [...start(ctx), ...${registrations}];
}
`,
  );
  return out;
}

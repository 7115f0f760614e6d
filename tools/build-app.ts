/**
 * Builds the web client for the compiled binary (package.json "build", before
 * `bun build --compile ... --asset dist/app`): the page's bundle, made by the
 * same bundleApp the server uses from source, and its static files, into
 * dist/app/ (src/core/webapp.ts APP_FILES). The binary serves them as they
 * are; run from a checkout or the package, the server bundles web/app/ itself.
 *
 *   bun tools/build-app.ts [OUT_DIR]      default dist/app
 */
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { APP_FILES, APP_SOURCE, bundleApp } from "../src/core/webapp.ts";

const out = resolve(process.argv[2] ?? join(import.meta.dir, "..", "dist", "app"));
mkdirSync(out, { recursive: true });
// Each file written under a private name and renamed: two builds at once (test runs) never leave half a file.
const put = (name: string, write: (tmp: string) => void) => {
  const tmp = join(out, `.${name}.${process.pid}`);
  write(tmp);
  renameSync(tmp, join(out, name));
};
const script = await bundleApp(APP_SOURCE);
put("app.js", (tmp) => writeFileSync(tmp, script));
for (const name of APP_FILES) if (name !== "app.js") put(name, (tmp) => copyFileSync(join(APP_SOURCE, name), tmp));
console.log(`web client built into ${out} (app.js ${script.length} bytes)`);

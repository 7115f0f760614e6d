/**
 * Resolution of the imports module files make (one Bun plugin per process),
 * for the module loader (src/core/loader.ts).
 *
 * A module on disk imports (by value) only two kinds of file:
 *  - files inside its own folder: re-imported with the module, each reload
 *    (Bun re-imports only the file whose URL changed, so every relative
 *    import of a module file gets the same `?v=` as its module);
 *  - the server's own files, written as they are from src/modules
 *    (`../../protocol/errors.ts`): the modules dir stands where src/modules
 *    stands; never src/store/ (refused: a module's data is its own, on
 *    ctx.database). These are not re-imported: the module gets the instance the
 *    server runs (same classes, same constants). From source that is the
 *    file itself; in the compiled binary, which has no source tree, it is
 *    the entry of HOST_FILES below — a file missing there cannot be imported
 *    from the binary, and the loader says so.
 * Imports are written with their extension (`./util.ts`), as everywhere in
 * this project: Bun resolves an extension-less specifier itself, without
 * asking plugins (measured with Bun 1.4.5), so `./util` would not be
 * re-imported and `../../core/seq` would not be found in the binary.
 * `import type` is erased before anything is resolved, so types may come
 * from anywhere. Packages (bare names) resolve from the modules dir as
 * usual, which in the binary means a node_modules beside the modules.
 * Everything a module needs at run time should rather come through `ctx`.
 */
import { existsSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";

// The server files a module may import by value (see HOST_FILES). Namespace imports, so
// the compiled binary embeds every export whether or not the server itself uses it.
import * as coreAcceptances from "./acceptances.ts";
import * as coreConfig from "./config.ts";
import * as coreDelivery from "./delivery.ts";
import * as coreDirectory from "./directory.ts";
import * as coreHooks from "./hooks.ts";
import * as coreLog from "./log.ts";
import * as coreMetrics from "./metrics.ts";
import * as coreModule from "./module.ts";
import * as coreRatelimit from "./ratelimit.ts";
import * as coreRegistry from "./registry.ts";
import * as coreRelays from "./relays.ts";
import * as coreSeq from "./seq.ts";
import * as protoAuth from "../protocol/auth.ts";
import * as protoCodec from "../protocol/codec.ts";
import * as protoEncoder from "../protocol/encoder.ts";
import * as protoErrors from "../protocol/errors.ts";
import * as protoFrame from "../protocol/frame.ts";
import * as protoStanzas from "../protocol/stanzas.ts";
import * as protoTurnRest from "../protocol/turn-rest.ts";
import * as transportConnection from "../transport/connection.ts";

/**
 * Server files that modules on disk can import in the compiled binary, keyed by
 * their path under src/. Add a file here when a module imports a new one by
 * value (test/wire/reload.test.ts checks every module of src/modules against it).
 */
export const HOST_FILES: Readonly<Record<string, object>> = {
  "core/acceptances.ts": coreAcceptances,
  "core/config.ts": coreConfig,
  "core/delivery.ts": coreDelivery,
  "core/directory.ts": coreDirectory,
  "core/hooks.ts": coreHooks,
  "core/relays.ts": coreRelays,
  "core/log.ts": coreLog,
  "core/metrics.ts": coreMetrics,
  "core/module.ts": coreModule,
  "core/ratelimit.ts": coreRatelimit,
  "core/registry.ts": coreRegistry,
  "core/seq.ts": coreSeq,
  "protocol/auth.ts": protoAuth,
  "protocol/codec.ts": protoCodec,
  "protocol/encoder.ts": protoEncoder,
  "protocol/errors.ts": protoErrors,
  "protocol/frame.ts": protoFrame,
  "protocol/stanzas.ts": protoStanzas,
  "protocol/turn-rest.ts": protoTurnRest,
  "transport/connection.ts": transportConnection,
};

/** The server's src/ folder on disk, when running from source; null in the compiled binary. */
const SOURCE_ROOT: string | null = (() => {
  const root = resolve(import.meta.dir, "..");
  return existsSync(join(root, "core", "loader.ts")) ? root : null;
})();

/** Modules dirs -> the cache-busting tag their files are imported with now. */
const dirs = new Map<string, string>();

/** Files of `dir` are imported with `?v=tag` from now on (a new tag per load or reload). */
export function tagModuleDir(dir: string, tag: string): void {
  dirs.set(dir, tag);
}
const HOST_NS = "switchboard-host";

/** Installs the resolver (once per process); modules dirs are added with tagModuleDir. */
export function installResolver(): void {
  if ((globalThis as Record<string, unknown>).__switchboardModuleResolver) return;
  (globalThis as Record<string, unknown>).__switchboardModuleResolver = true;
  Bun.plugin({
    name: "switchboard modules",
    setup(build) {
      build.onResolve({ filter: /^\.\.?\//, namespace: "file" }, (a) => {
        const importer = a.importer.replace(/\?.*$/, "");
        let dir: string | undefined;
        for (const d of dirs.keys()) if (importer.startsWith(d + sep)) dir = d;
        if (dir === undefined) return undefined; // not a module file: Bun resolves it as usual
        const target = resolve(dirname(importer), a.path);
        const inDir = relative(dir, target);
        const own = relative(dir, importer).split(sep)[0]!;
        if (!inDir.startsWith("..") && !isAbsolute(inDir)) {
          if (inDir.split(sep)[0] !== own) {
            throw new Error(`${importer} imports ${a.path}, a file of another module's folder; a module imports only its own files and the server's (modules are reloaded one by one)`);
          }
          return { path: `${target}?v=${dirs.get(dir)}` };
        }
        const key = relative(dirname(dir), target).split(sep).join("/");
        if (key.startsWith("store/")) {
          throw new Error(`${importer} imports ${a.path} (src/${key}): a module never imports src/store/; keep its data in a store of its own on ctx.database(name, schema)`);
        }
        const real = SOURCE_ROOT && !key.startsWith("..") ? fileOf(join(SOURCE_ROOT, key)) : null;
        if (real) return { path: real }; // from source: the very file the server runs
        const known = hostKey(key);
        if (known) return { path: known, namespace: HOST_NS };
        throw new Error(
          `${importer} imports ${a.path} (src/${key}), which the server does not provide to modules; ` +
            (key.startsWith("..") ? "a module imports its own files and the server's src/ files only" : `add "${key}" to HOST_FILES in src/core/module-imports.ts`),
        );
      });
      build.onLoad({ filter: /.*/, namespace: HOST_NS }, (a) => ({ exports: { ...HOST_FILES[a.path]! }, loader: "object" }));
    },
  });
}

function fileOf(p: string): string | null {
  return existsSync(p) && statSync(p).isFile() ? p : null;
}

function hostKey(key: string): string | null {
  for (const c of [key, key.replace(/\.js$/, ".ts")]) if (c in HOST_FILES) return c;
  return null;
}

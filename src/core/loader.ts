/**
 * The module loader: starts handler modules, and re-imports them from disk
 * while the server runs (SIGHUP, `switchboard reload`), in Prosody's order:
 *
 *   1. import the new code (cache-busted). If that fails, nothing is touched:
 *      the running version goes on and the report says why.
 *   2. old.save(), old.stop(), new.start(ctx), new.restore(state), then the
 *      dispatch entries are swapped: old ones out, new ones in. Steps 2 run
 *      in one synchronous stretch, so no frame, timer or socket event can
 *      see a module half registered (or registered twice).
 *   3. if new.start/restore throws, or its registrations clash with another
 *      module's, the new version is stopped and the old one restarted with
 *      the state it saved; the report says why.
 *
 * Connections are never touched: the listeners dispatch through `Hooks`, and
 * queues live in the store, so sockets and queued items carry on as they are.
 *
 * Where the code comes from. A modules dir holds one folder per module, each
 * with an index.ts (or index.js) that default-exports a `Module` named like
 * its folder. Load order: the names of `order` first (src/modules/index.ts),
 * then the other folders alphabetically. Order only matters between hooks of
 * equal priority; give a hook a priority when it must run before another.
 *
 * Imports of module files, and what the compiled binary can give them:
 * src/core/module-imports.ts.
 *
 * Costs, measured (../shared/notes/bun-platform.md §5): Bun never frees an
 * imported module, about 100 KB of RSS per reload of a 23 KB module, so only
 * modules whose files changed are re-imported; the others are "kept".
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { moduleContext, type ServerContext } from "./context.ts";
import { installResolver, tagModuleDir } from "./module-imports.ts";
import type { Hooks } from "./hooks.ts";
import { log } from "./log.ts";
import type { Counter, Metrics } from "./metrics.ts";
import type { Module, Registration } from "./module.ts";

export { HOST_FILES } from "./module-imports.ts";
export type ModuleResult =
  | { module: string; result: "kept"; version: string; note?: string }
  | { module: string; result: "reloaded"; from: string; to: string }
  | { module: string; result: "loaded"; version: string }
  /** `version`: what runs now (the old version), or null when nothing does. */
  | { module: string; result: "failed"; stage: "scan" | "import" | "start"; error: string; version: string | null };

export interface ReloadReport {
  ok: boolean;
  /** Where the modules came from: the modules dir, or null for the built-in ones. */
  dir: string | null;
  modules: ModuleResult[];
}

export interface LoadedModule {
  name: string;
  version: string;
  /** "built-in", or the module's folder. */
  source: string;
}

interface Entry {
  mod: Module;
  regs: Registration[];
  source: string;
  /** Hash of the files of the module's folder when it was imported; null for built-in modules. */
  fingerprint: string | null;
}

const INDEX_FILES = ["index.ts", "index.js"];

/** Module folders of a modules dir, in load order; throws if the dir cannot be read. */
export function scanModules(dir: string, order: readonly string[] = []): string[] {
  if (!existsSync(dir)) throw new Error(`modules dir ${dir} does not exist`);
  const names = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith(".") && !e.name.startsWith("_") && e.name !== "node_modules")
    .filter((e) => INDEX_FILES.some((f) => existsSync(join(dir, e.name, f))))
    .map((e) => e.name);
  const rank = (n: string) => (order.includes(n) ? order.indexOf(n) : order.length);
  return names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** A hash of every file under a module's folder: unchanged folders are not re-imported. */
function fingerprint(folder: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.name === "node_modules" || e.name.startsWith(".")) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) h.update(relative(folder, p)).update("\0").update(readFileSync(p)).update("\0");
    }
  };
  walk(folder);
  return h.digest("hex");
}

/** An error as one line for a person: Bun's syntax errors come as an AggregateError of BuildMessages with positions. */
export function describeError(e: unknown): string {
  const one = (x: any): string => {
    const p = x?.position;
    const where = p?.file ? `${p.file}:${p.line}:${p.column}: ` : "";
    return `${where}${x?.message ?? String(x)}`;
  };
  const errs = (e as { errors?: unknown[] })?.errors;
  if (Array.isArray(errs) && errs.length) return one(errs[0]) + (errs.length > 1 ? ` (and ${errs.length - 1} more)` : "");
  return one(e);
}

/** Checks the shape of a default export, so a wrong module fails at import and not mid-swap. */
function asModule(ns: Record<string, unknown>, name: string): Module {
  const m = ns.default as Partial<Module> | undefined;
  if (m === null || typeof m !== "object") throw new Error(`${name}/index.ts has no default export; it must \`export default\` a Module { name, version, start }`);
  if (m.name !== name) throw new Error(`the module in folder ${name} is named ${JSON.stringify(m.name)}; a module's name is its folder's name`);
  if (typeof m.version !== "string" || !m.version) throw new Error(`module ${name} has no version string`);
  if (typeof m.start !== "function") throw new Error(`module ${name} has no start(ctx) function`);
  for (const f of ["stop", "save", "restore"] as const) {
    if (m[f] !== undefined && typeof m[f] !== "function") throw new Error(`module ${name}: ${f} must be a function`);
  }
  return m as Module;
}

function checkRegistrations(name: string, regs: unknown): Registration[] {
  if (!Array.isArray(regs)) throw new Error(`${name}.start() returned ${typeof regs}, not an array of registrations`);
  for (const r of regs) {
    if (r === null || typeof r !== "object" || typeof (r as { handle?: unknown }).handle !== "function" || !("stanza" in r || "iq" in r || "hook" in r)) {
      throw new Error(`${name}.start() returned a registration that is not { stanza | iq | hook, handle }`);
    }
  }
  return regs as Registration[];
}

export class ModuleLoader {
  private entries: Entry[] = [];
  private dir: string | null = null;
  private order: readonly string[] = [];
  private gen = 0;
  private stopped = false;
  /** Reloads run one at a time (SIGHUP and the HTTP endpoint may ask at once). */
  private queue: Promise<unknown> = Promise.resolve();
  /** Label objects of switchboard_module_info, one per module name, updated in place (see info()). */
  private labels = new Map<string, { module: string; version: string }>();
  private reloads: Record<"reloaded" | "failed", Counter>;

  constructor(
    private readonly ctx: ServerContext,
    private readonly hooks: Hooks,
    private readonly metrics: Metrics,
  ) {
    this.reloads = {
      reloaded: metrics.counter("switchboard_module_reloads_total", "Module reloads, by result.", { result: "reloaded" }),
      failed: metrics.counter("switchboard_module_reloads_total", "Module reloads, by result.", { result: "failed" }),
    };
  }

  /** Starts a module the caller imported (the ones built into the binary); throws when it cannot start. */
  add(mod: Module, source = "built-in", fp: string | null = null): void {
    if (this.entries.some((e) => e.mod.name === mod.name)) throw new Error(`loader: module ${mod.name} is already loaded`);
    const regs = checkRegistrations(mod.name, mod.start(moduleContext(this.ctx, mod.name)));
    this.hooks.add(mod, regs);
    this.entries.push({ mod, regs, source, fingerprint: fp });
    this.info(mod);
    log.info("module loaded", { module: mod.name, version: mod.version, source });
  }

  /**
   * Loads every module of a modules dir (at startup). Any failure is fatal
   * here: there is no running version to keep. `order`: names loaded first.
   */
  async loadDir(dir: string, order: readonly string[] = []): Promise<void> {
    if (this.dir !== null) throw new Error(`loader: modules are already loaded from ${this.dir}`);
    this.dir = resolve(dir);
    this.order = order;
    installResolver();
    const names = scanModules(this.dir, order);
    if (names.length === 0) throw new Error(`modules dir ${this.dir} has no modules (folders with an index.ts that default-exports a Module)`);
    tagModuleDir(this.dir, String(++this.gen));
    for (const name of names) {
      const folder = join(this.dir, name);
      const fp = fingerprint(folder);
      let mod: Module;
      try {
        mod = await this.importModule(name);
      } catch (e) {
        throw new Error(`module ${name} (${folder}) cannot be imported: ${describeError(e)}`);
      }
      try {
        this.add(mod, folder, fp);
      } catch (e) {
        throw new Error(`module ${name} (${folder}) cannot start: ${describeError(e)}`);
      }
    }
  }

  /** Re-imports the modules whose files changed, loads new folders; never throws. */
  reload(): Promise<ReloadReport> {
    const run = this.queue.then(() => this.reloadNow());
    this.queue = run.catch(() => {});
    return run;
  }

  private async reloadNow(): Promise<ReloadReport> {
    const dir = this.dir;
    const results: ModuleResult[] = [];
    const report = (): ReloadReport => {
      const r: ReloadReport = { ok: results.every((x) => x.result !== "failed"), dir, modules: results };
      log[r.ok ? "info" : "error"]("modules reloaded", { dir, modules: results });
      return r;
    };
    if (this.stopped) return report(); // the server is shutting down: nothing to reload
    if (dir === null) {
      for (const e of this.entries) {
        results.push({ module: e.mod.name, result: "kept", version: e.mod.version, note: "built into the binary; set modules.dir to reload modules from disk" });
      }
      return report();
    }
    let names: string[];
    try {
      names = scanModules(dir, this.order);
    } catch (e) {
      for (const x of this.entries) results.push({ module: x.mod.name, result: "failed", stage: "scan", error: describeError(e), version: x.mod.version });
      return report();
    }
    // 1. Import what changed, touching nothing: a failure here leaves the running version as it is.
    tagModuleDir(dir, String(++this.gen));
    const fresh: { name: string; mod: Module; fp: string }[] = [];
    for (const name of names) {
      const entry = this.entries.find((e) => e.mod.name === name);
      let fp: string;
      try {
        fp = fingerprint(join(dir, name));
      } catch (e) {
        results.push({ module: name, result: "failed", stage: "scan", error: describeError(e), version: entry?.mod.version ?? null });
        continue;
      }
      if (entry && entry.fingerprint === fp) {
        results.push({ module: name, result: "kept", version: entry.mod.version });
        continue;
      }
      try {
        fresh.push({ name, mod: await this.importModule(name), fp });
      } catch (e) {
        results.push({ module: name, result: "failed", stage: "import", error: describeError(e), version: entry?.mod.version ?? null });
      }
    }
    for (const e of this.entries) {
      if (!names.includes(e.mod.name)) {
        results.push({ module: e.mod.name, result: "kept", version: e.mod.version, note: `no folder ${e.mod.name} in ${dir} any more; it runs until the server restarts` });
      }
    }
    // 2. Swap, all in one synchronous stretch (no await below this line).
    if (this.stopped) return report(); // stopAll() ran while the imports were awaited
    for (const f of fresh) {
      const entry = this.entries.find((e) => e.mod.name === f.name);
      results.push(entry ? this.swap(entry, f.mod, f.fp) : this.addNew(f.mod, join(dir, f.name), f.fp));
    }
    for (const r of results) if (r.result === "reloaded" || r.result === "failed") this.reloads[r.result].inc();
    const rank = new Map(names.map((n, i) => [n, i]));
    results.sort((a, b) => (rank.get(a.module) ?? names.length) - (rank.get(b.module) ?? names.length));
    return report();
  }

  private async importModule(name: string): Promise<Module> {
    const dir = this.dir!;
    const index = INDEX_FILES.map((f) => join(dir, name, f)).find((p) => existsSync(p));
    if (!index) throw new Error(`${join(dir, name)} has no index.ts`);
    // A plain path with a query, not a file:// URL: Bun ignores the query of file URLs (oven-sh/bun#21346).
    const ns = (await import(`${index}?v=${this.gen}`)) as Record<string, unknown>;
    return asModule(ns, name);
  }

  private addNew(mod: Module, source: string, fp: string): ModuleResult {
    try {
      this.add(mod, source, fp);
      return { module: mod.name, result: "loaded", version: mod.version };
    } catch (e) {
      try {
        mod.stop?.();
      } catch {}
      this.hooks.remove(mod.name);
      return { module: mod.name, result: "failed", stage: "start", error: describeError(e), version: null };
    }
  }

  /** save, stop, start, restore, swap; on failure the old version is restarted with its state. Synchronous on purpose. */
  private swap(entry: Entry, next: Module, fp: string): ModuleResult {
    const old = entry.mod;
    const name = old.name;
    let state: unknown;
    try {
      state = old.save?.();
    } catch (e) {
      // Nothing changed yet: the old version runs on, untouched.
      return { module: name, result: "failed", stage: "start", error: `save() of the running version ${old.version} threw: ${describeError(e)}`, version: old.version };
    }
    try {
      old.stop?.();
    } catch (e) {
      log.warn("module stop failed during reload", { module: name, version: old.version, err: e as Error });
    }
    try {
      const regs = checkRegistrations(name, next.start(moduleContext(this.ctx, next.name)));
      if (state !== undefined) {
        if (next.restore) next.restore(state);
        else log.warn("module state dropped: the new version has no restore()", { module: name, from: old.version, to: next.version });
      }
      this.hooks.remove(name);
      this.hooks.add(next, regs); // checks for clashes before it changes anything
      Object.assign(entry, { mod: next, regs, fingerprint: fp });
      this.info(next);
      log.info("module reloaded", { module: name, from: old.version, to: next.version });
      return { module: name, result: "reloaded", from: old.version, to: next.version };
    } catch (e) {
      const why = describeError(e);
      try {
        next.stop?.();
      } catch {}
      try {
        const regs = checkRegistrations(name, old.start(moduleContext(this.ctx, old.name)));
        if (state !== undefined) old.restore?.(state);
        this.hooks.remove(name);
        this.hooks.add(old, regs);
        entry.regs = regs;
        log.error("module reload failed; the old version runs on", { module: name, version: old.version, tried: next.version, err: why });
        return { module: name, result: "failed", stage: "start", error: why, version: old.version };
      } catch (e2) {
        this.hooks.remove(name);
        this.entries = this.entries.filter((x) => x !== entry);
        this.labels.get(name)!.version = "";
        log.error("module reload failed and the old version could not restart; the module is unloaded", { module: name, err: why, restart: describeError(e2) });
        return { module: name, result: "failed", stage: "start", error: `${why}; restarting ${old.version} failed too (${describeError(e2)}), so ${name} is unloaded`, version: null };
      }
    }
  }

  /**
   * switchboard_module_info{module,version} 1. The label object is registered once per
   * module and its version edited in place on reload: the metrics registry has no way to
   * drop a series, and a series per version ever loaded would say 1.0.0 still runs.
   */
  private info(mod: Module): void {
    let l = this.labels.get(mod.name);
    if (l) {
      l.version = mod.version;
      return;
    }
    l = { module: mod.name, version: mod.version };
    this.labels.set(mod.name, l);
    const labels = l;
    this.metrics.gauge("switchboard_module_info", "Loaded modules and their versions (1 = running).", () => (labels.version ? 1 : 0), labels);
  }

  list(): LoadedModule[] {
    return this.entries.map((e) => ({ name: e.mod.name, version: e.mod.version, source: e.source }));
  }

  /** Stops every module, last loaded first, and removes its registrations (server shutdown). */
  stopAll(): void {
    this.stopped = true;
    for (const e of [...this.entries].reverse()) {
      try {
        e.mod.stop?.();
      } catch (err) {
        log.error("module stop failed", { module: e.mod.name, err: err as Error });
      }
      this.hooks.remove(e.mod.name);
    }
    this.entries = [];
  }
}

/**
 * The modules a server starts with, in load order. Core never imports this
 * file; the CLI does. The compiled binary embeds these; from source (and in
 * the binary with modules.dir set) the loader imports the folders from disk
 * instead, so they can be reloaded, in the order of this list
 * (src/core/loader.ts; README, "Hot reload").
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Module } from "../core/module.ts";
import messaging from "./messaging/index.ts";
import devices from "./devices/index.ts";
import presence from "./presence/index.ts";
import groups from "./groups/index.ts";
import keys from "./keys/index.ts";
import push from "./push/index.ts";
import calls from "./calls/index.ts";

export const DEFAULT_MODULES: Module[] = [messaging, devices, presence, groups, keys, push, calls];

/** Load order of a modules dir: these names first, other folders after them alphabetically. */
export const MODULE_ORDER: readonly string[] = DEFAULT_MODULES.map((m) => m.name);

/**
 * This folder on disk when running from source: the default modules dir. Null
 * in the compiled binary, whose files live in its embedded /$bunfs (only the
 * built-in modules above, then).
 */
export const SOURCE_MODULES_DIR: string | null =
  !import.meta.dir.startsWith("/$bunfs") && existsSync(join(import.meta.dir, "messaging", "index.ts")) ? import.meta.dir : null;

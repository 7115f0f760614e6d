/** The modules a server starts with, in load order. Core never imports this file; the CLI does. */
import type { Module } from "../core/module.ts";
import messaging from "./messaging/index.ts";
import devices from "./devices/index.ts";
import presence from "./presence/index.ts";

export const DEFAULT_MODULES: Module[] = [messaging, devices, presence];

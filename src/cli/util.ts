/** Small helpers shared by the CLI commands: output, required flags, confirmation, times, group ids. */
import { createInterface } from "node:readline/promises";
import { GROUP_ID_RE } from "../protocol/stanzas.ts";
import { UsageError } from "./args.ts";

/** One JSON object per line on stdout. */
export const out = (o: unknown) => console.log(JSON.stringify(o));

/** The value of a required flag, or a UsageError saying what it is for. */
export function need(flags: Record<string, string>, name: string, why: string, usage: string): string {
  const v = flags[name];
  if (v === undefined || v === "") throw new UsageError(`${name} is required: ${why}`, usage);
  return v;
}

/** The flags of `names` that are set. */
export function pick(flags: Record<string, string>, names: Iterable<string>): Record<string, string> {
  const o: Record<string, string> = {};
  for (const n of names) if (flags[n] !== undefined) o[n] = flags[n]!;
  return o;
}

/** 2026-11-22 11:52 in local time: short, sortable, unambiguous. */
export function localTime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** Asks a yes/no question on the terminal (stderr), for commands that cannot be undone; true for y or yes. */
export async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

/** "device" or "devices". */
export const plural = (n: number, one: string) => `${one}${n === 1 ? "" : "s"}`;

/** A group id as typed: with its # (quoted in the shell) or without. */
export function groupArg(g: string, usage: string): string {
  const id = g.startsWith("#") ? g : `#${g}`;
  if (!GROUP_ID_RE.test(id)) throw new UsageError(`${JSON.stringify(g)} is not a group id (# and 1..31 of a-z 0-9, as \`group create\` and \`group list\` print them)`, usage);
  return id;
}

/** Resolves on SIGINT or SIGTERM. Keeps a timer alive meanwhile: Bun busy-waits when only signal handlers hold the process open. */
export function interrupted(): { done: Promise<string>; cancel: () => void } {
  const keepAlive = setInterval(() => {}, 1 << 30);
  let resolve!: (s: string) => void;
  const done = new Promise<string>((r) => (resolve = r));
  const onInt = () => resolve("SIGINT");
  const onTerm = () => resolve("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  const cancel = () => {
    clearInterval(keepAlive);
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  };
  void done.then(cancel);
  return { done, cancel };
}

/** Minimal argv parsing: positionals, `--flag value`, `--flag=value`, and boolean `--flag`. */
import { closest } from "../core/config.ts";

export interface Args {
  positionals: string[];
  flags: Record<string, string>;
}

/**
 * A mistake in how the command was called: main prints it, then the usage (or
 * `hint`, or a pointer to --help), and exits 2.
 */
export class UsageError extends Error {
  constructor(message: string, readonly usage?: string, readonly hint?: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Flags that never take a value. */
export const BOOLEAN = new Set(["--tls", "--json", "--help", "-h", "--no-ack", "--insecure", "--plain", "--lines", "--check", "--version", "--yes", "--answer"]);

export interface ParseOptions {
  /** Flags that never take a value (default: BOOLEAN, the CLI's). */
  booleans?: ReadonlySet<string>;
  /** Flags whose value is taken as given even when it starts with "--" (they hand flags on to another program). */
  verbatim?: ReadonlySet<string>;
}

export function parseArgs(argv: string[], o: ParseOptions = {}): Args {
  const booleans = o.booleans ?? BOOLEAN;
  const positionals: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("--") || a === "-h") {
      const eq = a.indexOf("=");
      if (eq > 0) flags[a.slice(0, eq)] = a.slice(eq + 1);
      else if (booleans.has(a)) flags[a] = "true";
      else {
        const v = argv[i + 1];
        if (v === undefined || (v.startsWith("--") && !o.verbatim?.has(a))) throw new UsageError(`flag ${a} needs a value`);
        flags[a] = v;
        i++;
      }
    } else positionals.push(a);
  }
  return { positionals, flags };
}

/** Refuses flags the command does not know, suggesting the closest one it does. */
export function checkFlags(command: string, flags: Record<string, string>, known: ReadonlySet<string>, usage?: string): void {
  for (const f of Object.keys(flags)) {
    if (f === "--help" || f === "-h" || known.has(f)) continue;
    const hint = closest(f, known);
    throw new UsageError(`${command}: unknown flag ${f}${hint ? ` (did you mean ${hint}?)` : ""}`, usage);
  }
}

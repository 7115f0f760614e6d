/** Minimal argv parsing: positionals, `--flag value`, `--flag=value`, and boolean `--flag`. */
export interface Args {
  positionals: string[];
  flags: Record<string, string>;
}

/** Flags that never take a value. */
const BOOLEAN = new Set(["--tls", "--json", "--help", "-h", "--no-ack", "--insecure", "--plain"]);

export function parseArgs(argv: string[]): Args {
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
      else if (BOOLEAN.has(a)) flags[a] = "true";
      else {
        const v = argv[i + 1];
        if (v === undefined || v.startsWith("--")) throw new Error(`flag ${a} needs a value`);
        flags[a] = v;
        i++;
      }
    } else positionals.push(a);
  }
  return { positionals, flags };
}

/**
 * The CLI's side of the server's loopback admin API (src/core/http.ts):
 * `status`, `user list|delete|disable|enable`, `device kick` (and `reload`,
 * which has its own report). Nothing of the server is imported: these
 * commands work whatever state its modules are in.
 */
import { defineCommand, type Command } from "./command.ts";
import { httpBase } from "../ops/trace-cli.ts";
import { out } from "./util.ts";

/** The flags of every admin command: where the server's HTTP port is, and --json. */
export const ADMIN_FLAGS = ["--config", "--http-host", "--http-port", "--json"] as const;

export const ADMIN_NOTES = `It asks the running server over its HTTP port (loopback only): pass the --config FILE the
server runs with, or --http-port N (and --http-host H if it is not 127.0.0.1).`;

/** An operation's answer: its JSON body (`ok: false` with `reason` and `message` when refused) and HTTP status. */
export interface AdminAnswer {
  status: number;
  body: Record<string, unknown> & { ok?: boolean; reason?: string; message?: string };
}

/** Calls the admin API; throws (exit 1) with what to do when the server cannot be reached or refuses the caller. */
export async function adminCall(flags: Record<string, string>, method: "GET" | "POST", path: string, what: string): Promise<AdminAnswer> {
  const url = `${httpBase(flags, what)}${path}`;
  let res: Response;
  try {
    res = await fetch(url, { method });
  } catch (e) {
    throw new Error(`cannot reach the server at ${url}: ${(e as Error).message}\n  is it running? Pass the --config, or --http-port, it runs with`);
  }
  const text = await res.text();
  if (res.status === 403 && !text.startsWith("{")) throw new Error(`the server refused: ${text.trim()}\n  run switchboard ${what} on the server's machine, with http.host a loopback address or a wildcard`);
  let body: AdminAnswer["body"];
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`the server answered ${res.status} at ${url}: ${text.trim()}${res.status === 404 ? "\n  is it an older switchboard, without this command? (switchboard status shows its version)" : ""}`);
  }
  return { status: res.status, body };
}

/** `user NAME` in a path: the name as one segment. */
export const userPath = (name: string) => `/admin/users/${encodeURIComponent(name)}`;

/** The refusal of an operation as an Error for main to print (exit 1), with what to do for the usual ones. */
export function refused(a: AdminAnswer, name: string): Error {
  const hint = a.body.reason === "unknown_user" ? "\n  `switchboard user list` shows the accounts" : a.body.reason === "unknown_device" ? `\n  \`switchboard user list\` shows how many devices ${name} has; its devices log in as \`device list\` shows` : "";
  return new Error(`${a.body.message ?? `the server answered ${a.status}`}${hint}`);
}

/** `user disable NAME` and `user enable NAME`. */
export function userSwitch(op: "disable" | "enable"): Command {
  return defineCommand({
    name: `user ${op}`,
    section: "admin",
    synopsis: `user ${op} NAME`,
    summary: op === "disable" ? "refuse the account's logins (account_disabled) and close its sessions;\nits data stays" : "let a disabled account log in again",
    usage: `switchboard user ${op} NAME [--config FILE | --http-port N] [--json]`,
    flags: ADMIN_FLAGS,
    args: [1, 1],
    notes: ADMIN_NOTES,
    async run({ flags, rest, json }) {
      const name = rest[0]!;
      const a = await adminCall(flags, "POST", `${userPath(name)}/${op}`, `user ${op}`);
      if (!a.body.ok) throw refused(a, name);
      const { changed, closed } = a.body as { changed: boolean; closed: number };
      if (json) out({ account: name, [`${op}d`]: true, changed, closed });
      else if (!changed) console.log(`${name} was already ${op}d`);
      else console.log(`${op}d ${name}${op === "disable" ? `; ${closed} ${closed === 1 ? "session" : "sessions"} closed` : ""}`);
      return 0;
    },
  });
}

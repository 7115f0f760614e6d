/**
 * What a CLI command is: its name, where it shows in the help, its usage,
 * the flags it takes and what they mean, and `run`. The table of every
 * command (registry.ts) checks the flags and arguments before `run` and
 * generates the global help and each command's `--help` from these fields.
 */
import { CONFIG_FLAGS } from "../core/config.ts";

export type Section = "server" | "admin" | "accounts" | "devices" | "messages" | "groups" | "contacts";

export interface Invocation {
  /** Flags as given, `--name` -> value ("true" for boolean flags). */
  flags: Record<string, string>;
  /** Positional arguments after the command's name. */
  rest: string[];
  json: boolean;
  /** The command's usage, for UsageErrors. */
  usage: string;
}

export interface Command {
  /** "send", "device enroll". */
  name: string;
  section: Section;
  /** The synopsis in the global help, without "switchboard ": `device list --key FILE [--user NAME]`. */
  synopsis: string;
  /** What it does, for the global help (and the top of its own help); may hold several lines. */
  summary: string;
  /** Usage line(s) for errors and `--help`, with "switchboard ". */
  usage: string;
  /** Flags it accepts (besides --help). */
  flags: ReadonlySet<string>;
  /** Positional arguments after the name: [min, max]. */
  args: [number, number];
  /** More for its `--help`, after the flags. */
  notes?: string;
  /** Exit code; -1: keeps running (serve). */
  run(inv: Invocation): Promise<number>;
}

export interface CommandSpec extends Omit<Command, "flags" | "args"> {
  flags: Iterable<string>;
  args?: [number, number];
}

export const defineCommand = (c: CommandSpec): Command => ({ ...c, flags: new Set(c.flags), args: c.args ?? [0, 0] });

/** Flags of every command that talks to a server as a device. */
export const CONNECTION = ["--host", "--port", "--tls", "--ca", "--insecure", "--data-dir", "--config"] as const;

export { CONFIG_FLAGS };

/** What each flag means, for the commands' `--help` ([value name, meaning]). */
export const FLAG_DOCS: Record<string, [string, string]> = {
  "--key": ["FILE", "the device's key file (from `device enroll` or `device link`); its end-to-end state is FILE.e2e, its resumption ticket FILE.ticket"],
  "--to": ["NAME|#GROUP", "the account or group to write to"],
  "--user": ["NAME", "the account"],
  "--code": ["CODE", "the one-time enrollment code from `user add` or `user code`"],
  "--name": ["LABEL", "a name for the new device, shown in `device list`"],
  "--device": ["N", "a device id, as `device list` shows it"],
  "--approve": ["CODE", "approve the link code shown on the new device"],
  "--json": ["", "one JSON object per line instead of text"],
  "--plain": ["", "no end-to-end encryption: the server, and whoever runs it, can read the text"],
  "--file": ["PATH", "send this file: encrypted on this machine, uploaded, its key in an end-to-end encrypted message"],
  "--type": ["MIME", "the file's type for the recipient (default: from its extension); never told to the server"],
  "--save-dir": ["DIR", `where received files are saved (default ./switchboard-files)`],
  "--lines": ["", "plain lines, no prompt (as when stdin or stdout is not a terminal)"],
  "--no-ack": ["", "do not acknowledge: what is printed stays queued for the next listen"],
  "--yes": ["", "do not ask for confirmation"],
  "--check": ["", "print the configuration serve would use, and where each value comes from"],
  "--host": ["H", "the server's address (default: the key file's server, else tcp.host of the configuration, else 127.0.0.1)"],
  "--port": ["N", "the server's port (default: the key file's, else tcp.port or tls.port of the configuration: 5222, 5223 with --tls)"],
  "--tls": ["", "connect with TLS"],
  "--ca": ["FILE", "trust this certificate (PEM) for TLS"],
  "--insecure": ["", "TLS without checking the certificate (testing only)"],
  "--data-dir": ["DIR", "the server's data directory (default ./data)"],
  "--config": ["FILE", "the server's TOML configuration (or SWITCHBOARD_CONFIG); its ports and data directory apply"],
  "--http-port": ["N", "the server's HTTP port (http.port)"],
  "--http-host": ["H", "the server's HTTP address (http.host; default 127.0.0.1)"],
  "--last-seen": ["WHO", "who sees your last seen: everyone, contacts or nobody"],
  "--answer": ["", "wait for the next call to this account and take it"],
  "--count": ["N", "UDP echo packets to send through the relay (default 20)"],
  "--online": ["WHO", "who sees when you are online: everyone, contacts or nobody"],
};

/**
 * The table of every CLI command, in the order of the help. It finds the
 * command an argv names, checks its flags and arguments, and generates both
 * the global help and each command's `--help`.
 */
import { checkFlags, UsageError, type Args } from "./args.ts";
import { closest, CONFIG_FLAGS } from "../core/config.ts";
import { FLAG_DOCS, type Command, type Section } from "./command.ts";
import serve from "./commands/serve.ts";
import reload from "./commands/reload.ts";
import relay from "./commands/relay.ts";
import clusterStatus from "./commands/cluster-status.ts";
import clusterMove from "./commands/cluster-move.ts";
import clusterRebalance from "./commands/cluster-rebalance.ts";
import trace from "./commands/trace.ts";
import config from "./commands/config.ts";
import backup from "./commands/backup.ts";
import restore from "./commands/restore.ts";
import userAdd from "./commands/user-add.ts";
import userCode from "./commands/user-code.ts";
import deviceEnroll from "./commands/device-enroll.ts";
import deviceLink from "./commands/device-link.ts";
import deviceList from "./commands/device-list.ts";
import deviceRevoke from "./commands/device-revoke.ts";
import send from "./commands/send.ts";
import listen from "./commands/listen.ts";
import chat from "./commands/chat.ts";
import call from "./commands/call.ts";
import safety from "./commands/safety.ts";
import groupCreate from "./commands/group-create.ts";
import groupAdd from "./commands/group-add.ts";
import groupRemove from "./commands/group-remove.ts";
import groupLeave from "./commands/group-leave.ts";
import groupList from "./commands/group-list.ts";
import groupInfo from "./commands/group-info.ts";
import version from "./commands/version.ts";
import pushVapidKeys from "./commands/push-vapid-keys.ts";
import status from "./commands/status.ts";
import userList from "./commands/user-list.ts";
import userDelete from "./commands/user-delete.ts";
import userDisable from "./commands/user-disable.ts";
import userEnable from "./commands/user-enable.ts";
import deviceKick from "./commands/device-kick.ts";
import contactsAdd from "./commands/contacts-add.ts";
import contactsRemove from "./commands/contacts-remove.ts";
import contactsList from "./commands/contacts-list.ts";
import privacy from "./commands/privacy.ts";
import block from "./commands/block.ts";
import unblock from "./commands/unblock.ts";

export const COMMANDS: readonly Command[] = [
  serve, relay, reload, trace, config, backup, restore, clusterStatus, clusterMove, clusterRebalance, version, pushVapidKeys,
  userAdd, userCode,
  deviceEnroll, deviceLink, deviceList, deviceRevoke,
  status, userList, userDelete, userDisable, userEnable, deviceKick,
  send, listen, chat, call, safety,
  groupCreate, groupAdd, groupRemove, groupLeave, groupList, groupInfo,
  contactsAdd, contactsRemove, contactsList, privacy, block, unblock,
];

const BY_NAME = new Map(COMMANDS.map((c) => [c.name, c]));

const SECTIONS: Record<Section, { title: string; notes?: string }> = {
  server: {
    title: "server",
    notes: `Every setting can be given in the TOML file of --config (or SWITCHBOARD_CONFIG), as an
environment variable (SWITCHBOARD_TCP_PORT) or as a flag (--tcp-port); flag > environment > file.`,
  },
  admin: {
    title: "administration (asks the running server over its loopback HTTP port: --config FILE or --http-port N)",
  },
  accounts: { title: "accounts (run beside the server: they write its data directory, ./data or --data-dir DIR)" },
  devices: { title: "devices (a key file is one device of one account; keep it private)" },
  messages: {
    title: "messages (end-to-end encrypted: the server relays text it cannot read)",
    notes: `--plain                            send, listen or chat without encryption: the text travels as it
                                   is, and the server (and whoever runs it) can read it
A device's end-to-end state (its identity keys and sessions) is FILE.e2e beside its key file FILE:
keep both private and together. \`device enroll\` and \`device link\` publish the device's keys
right away (and any later use publishes them again if they are missing). Deleting FILE.e2e gives
the device a new identity: its peers see "security code changed".`,
  },
  groups: {
    title: "groups (a group id starts with #: quote it in the shell, '#k3x9')",
    notes: `send and chat take --to GROUP; listen prints group messages with the group as "conversation"`,
  },
  contacts: {
    title: "contacts, privacy and blocking (kept on the server for your account; the chat header shows what they allow)",
  },
};

const CONNECTION_NOTES = `connection flags (device, send, listen, chat, safety, group)
  --host H (127.0.0.1)   --port N (5222, or 5223 with --tls)   --tls [--ca FILE | --insecure]
  A key file remembers where its device enrolled, so later commands need only --key. Without
  one (device enroll, device link), the host and port are those of the server's configuration:
  --config FILE or SWITCHBOARD_CONFIG, and SWITCHBOARD_TCP_PORT and the other variables.
  With --tls and no --ca, the server's development certificate is trusted from
  its data directory (./data/tls/dev-cert.pem, or under --data-dir DIR).
--json prints one JSON object per line instead of text.`;

const COL = 37;
const indent = (text: string, n: number) => text.split("\n").map((l) => " ".repeat(n) + l).join("\n");

/** `  synopsis    summary`, the summary in a column of its own (under the synopsis when that is long). */
function entry(c: Command): string {
  const head = `  ${c.synopsis}`;
  if (!c.summary) return head;
  const [first, ...more] = c.summary.split("\n");
  const lines = head.length < COL - 1 ? [head.padEnd(COL) + first] : [head, " ".repeat(COL) + first];
  for (const l of more) lines.push(" ".repeat(COL) + l);
  return lines.join("\n");
}

export function globalHelp(): string {
  const parts = ["switchboard: a relay messaging server and its terminal client", "", "usage: switchboard COMMAND [ARGUMENTS] [FLAGS]"];
  for (const [section, { title, notes }] of Object.entries(SECTIONS) as [Section, { title: string; notes?: string }][]) {
    parts.push("", title, ...COMMANDS.filter((c) => c.section === section).map(entry));
    if (notes) parts.push(indent(notes, 2));
  }
  parts.push("", CONNECTION_NOTES, "", "`switchboard COMMAND --help` shows one command's flags. More in README.md; the wire protocol is in docs/PROTOCOL.md.");
  return parts.join("\n");
}

/** Setting flags other than the few a command documents itself (--config, --data-dir, --http-port). */
const SETTING_ONLY = new Set([...CONFIG_FLAGS].filter((f) => !(f in FLAG_DOCS)));

export function commandHelp(c: Command): string {
  const parts = [`usage: ${c.usage}`];
  if (c.summary) parts.push("", c.summary);
  const flags = [...c.flags].filter((f) => !SETTING_ONLY.has(f));
  if (flags.length) {
    const rows = flags.map((f) => [`${f}${FLAG_DOCS[f]?.[0] ? ` ${FLAG_DOCS[f]![0]}` : ""}`, FLAG_DOCS[f]?.[1] ?? ""] as const);
    const w = Math.max(...rows.map(([n]) => n.length)) + 2;
    parts.push("", "flags:", ...rows.map(([n, d]) => `  ${n.padEnd(w)}${d}`));
  }
  if ([...c.flags].some((f) => SETTING_ONLY.has(f))) parts.push("  --SETTING VALUE   any setting of `switchboard config` (--tcp-port 6222, ...)");
  if (c.notes) parts.push("", c.notes);
  return parts.join("\n");
}

/** The command an argv names ("device enroll" from positionals "device", "enroll", ...), or a UsageError saying what exists. */
export function findCommand(positionals: string[]): Command {
  const [cmd, sub] = positionals as [string, string | undefined];
  const two = sub !== undefined ? BY_NAME.get(`${cmd} ${sub}`) : undefined;
  if (two) return two;
  const one = BY_NAME.get(cmd);
  if (one) return one;
  const subs = COMMANDS.filter((c) => c.name.startsWith(`${cmd} `)).map((c) => c.name.split(" ")[1]!);
  if (subs.length) throw new UsageError(sub === undefined ? `${cmd} needs a subcommand: ${subs.join(", ")}` : `unknown command ${cmd} ${sub}; ${cmd} has ${subs.join(", ")}`);
  const hint = closest(cmd, new Set(COMMANDS.map((c) => c.name.split(" ")[0]!)));
  throw new UsageError(`unknown command ${JSON.stringify(cmd)}${hint ? ` (did you mean ${hint}?)` : ""}`, undefined, "run `switchboard --help` for the list of commands");
}

/** Checks flags and arguments, then runs the command. */
export function runCommand(c: Command, args: Args): Promise<number> {
  checkFlags(c.name, args.flags, c.flags, c.usage);
  const rest = args.positionals.slice(c.name.split(" ").length);
  const [min, max] = c.args;
  if (rest.length < min || rest.length > max) {
    throw new UsageError(rest.length > max ? `${c.name}: unexpected argument ${JSON.stringify(rest[max])}` : `${c.name}: missing argument`, c.usage);
  }
  return c.run({ flags: args.flags, rest, json: args.flags["--json"] === "true", usage: c.usage });
}

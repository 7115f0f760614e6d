/**
 * The chat's own commands: a line starting with `/` is one of them, never a
 * message (`//text` sends "/text"). An unknown one is said so, not sent.
 */
export type Slash = { kind: "message"; text: string } | { kind: "empty" } | { kind: "command"; name: "help" | "safety" | "quit" | "block" | "unblock" | "file"; arg: string } | { kind: "unknown"; name: string };

export const CHAT_HELP = [
  "  /safety [ACCOUNT]  the safety number with the peer (in a group: with ACCOUNT), to compare with theirs",
  "  /file PATH         send a file (encrypted here; the server stores ciphertext only)",
  "  /block [ACCOUNT]   block the peer (or ACCOUNT): no messages, typing or presence either way",
  "  /unblock [ACCOUNT] undo /block",
  "  /help              this list",
  "  /quit              leave the chat (as ctrl-d does)",
  "  //text             send a line that starts with /",
];

export function parseLine(line: string): Slash {
  const text = line.trim();
  if (text === "") return { kind: "empty" };
  if (text.startsWith("//")) return { kind: "message", text: text.slice(1) };
  if (!text.startsWith("/")) return { kind: "message", text };
  const sp = text.search(/\s/);
  const name = sp < 0 ? text.slice(1) : text.slice(1, sp);
  const arg = sp < 0 ? "" : text.slice(sp + 1).trim();
  if (name === "help" || name === "safety" || name === "quit" || name === "block" || name === "unblock" || name === "file") return { kind: "command", name, arg };
  return { kind: "unknown", name };
}

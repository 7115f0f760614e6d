/** `switchboard chat`: an interactive conversation in the terminal (the UI is src/cli/chat/). */
import { CONNECTION, defineCommand } from "../command.ts";
import { runChat } from "../chat/index.ts";
import { CHAT_HELP } from "../chat/slash.ts";

export default defineCommand({
  name: "chat",
  section: "messages",
  synopsis: "chat --key FILE --to NAME [--lines]",
  summary: `an interactive conversation in the terminal (--lines: plain
lines, no prompt); /safety in it prints the safety number`,
  usage: "switchboard chat --key FILE --to NAME|#GROUP [--plain] [--lines] [--save-dir DIR]",
  flags: [...CONNECTION, "--key", "--to", "--plain", "--lines", "--save-dir"],
  notes: ["commands in the chat:", ...CHAT_HELP].join("\n"),
  run: ({ flags, usage }) => runChat(flags, usage),
});

/** `switchboard send`: TEXT, or each line of stdin, end-to-end encrypted unless --plain; one `sent` JSON line per message. */
import { createInterface } from "node:readline";
import { CONNECTION, defineCommand } from "../command.ts";
import { UsageError } from "../args.ts";
import { isGroupId } from "../../protocol/stanzas.ts";
import type { SecureClient } from "../../client/secure.ts";
import { statePathFor } from "../../client/secure.ts";
import { explain, openClient } from "../connect.ts";
import { published, secureClient, withoutKeys } from "../e2e.ts";
import { checkRecipient, sendText } from "../sending.ts";
import { groupArg, need, out } from "../util.ts";

export default defineCommand({
  name: "send",
  section: "messages",
  synopsis: "send --key FILE --to NAME [TEXT...]",
  summary: "send TEXT, or each line of stdin; one JSON line per message sent",
  usage: "switchboard send --key FILE --to NAME|#GROUP [--plain] [TEXT...]",
  flags: [...CONNECTION, "--key", "--to", "--plain"],
  args: [0, Infinity],
  notes: "Empty (or blank) messages are refused; blank stdin lines are skipped.",
  async run({ flags: f, rest, usage }) {
    const to = need(f, "--to", "the recipient account, or a group id", usage);
    const plain = f["--plain"] === "true";
    if (isGroupId(to)) groupArg(to, usage);
    if (rest.length && rest.join(" ").trim() === "") throw new UsageError("send: the message is empty; there is nothing to send", usage);
    if (rest.length === 0 && process.stdin.isTTY) console.error(`reading messages for ${to} from stdin, one per line; ctrl-d to finish`);
    let secure: SecureClient | null = null;
    const warn = (m: string) => console.error(`switchboard: warning: ${m}`);
    const { client } = await openClient(f, usage, {
      reconnect: false,
      autoAck: false,
      // Not decrypting what arrives meanwhile: it stays queued, and decryptable, for the next listen or chat.
      setup: (c) => (secure = plain ? null : secureClient(c, statePathFor(f["--key"]!), ["message"])),
    });
    const s = secure as SecureClient | null;
    try {
      if (s) {
        s.on("identityChanged", (e) => out({ event: "security_code_changed", ...e }));
        s.on("devicesChanged", (e) => out({ event: "devices_changed", ...e }));
        s.on("error", (e) => warn(e.message));
        await published(s).catch((e) => {
          throw explain(e, client.opts);
        });
      }
      await checkRecipient(client, to).catch((e) => {
        throw explain(e, client.opts);
      });
      const warned = new Set<number>();
      const send = async (text: string) => {
        try {
          const sent = await sendText(client, s, to, text);
          out({ event: "sent", ...sent, encrypted: s !== null });
        } catch (e) {
          throw explain(e, client.opts);
        }
        if (s && !isGroupId(to)) {
          for (const d of await withoutKeys(client, to)) {
            if (warned.has(d)) continue;
            warned.add(d);
            warn(`${to} device ${d} has no end-to-end keys, so it got a notice instead of the message (a device publishes its keys when it enrolls or links, or on its next listen or chat)`);
          }
        }
      };
      if (rest.length) await send(rest.join(" "));
      else for await (const line of createInterface({ input: process.stdin })) if (line.trim()) await send(line);
    } finally {
      s?.close();
      await client.close();
    }
    return 0;
  },
});

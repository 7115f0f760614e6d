/**
 * `switchboard send`: TEXT, or each line of stdin, end-to-end encrypted unless --plain; one `sent` JSON line per
 * message. `--file PATH`: the file, encrypted under a fresh key and uploaded (client/media.ts), its key in the message.
 */
import { createInterface } from "node:readline";
import { CONNECTION, defineCommand } from "../command.ts";
import { UsageError } from "../args.ts";
import { isGroupId } from "../../protocol/stanzas.ts";
import type { SecureClient } from "../../client/secure.ts";
import { MediaError, statePathFor } from "../../client/secure.ts";
import { explain, openClient } from "../connect.ts";
import { published, secureClient, withoutKeys } from "../e2e.ts";
import { checkRecipient, sendText } from "../sending.ts";
import { progressBar, throttled, typeOf } from "../files.ts";
import { groupArg, need, out } from "../util.ts";

export default defineCommand({
  name: "send",
  section: "messages",
  synopsis: "send --key FILE --to NAME [TEXT... | --file PATH]",
  summary: "send TEXT, or each line of stdin, or a file; one JSON line per message sent",
  usage: "switchboard send --key FILE --to NAME|#GROUP [--plain] [TEXT...]\n       switchboard send --key FILE --to NAME|#GROUP --file PATH [--type MIME]",
  flags: [...CONNECTION, "--key", "--to", "--plain", "--file", "--type"],
  args: [0, Infinity],
  notes: `Empty (or blank) messages are refused; blank stdin lines are skipped.
--file: the file is encrypted on this machine under a key of its own, the ciphertext uploaded to the server
(resumed if the connection drops), and the key sent end-to-end encrypted; the server learns a size bucket only.`,
  async run({ flags: f, rest, usage }) {
    const to = need(f, "--to", "the recipient account, or a group id", usage);
    const plain = f["--plain"] === "true";
    if (isGroupId(to)) groupArg(to, usage);
    const file = f["--file"];
    if (file !== undefined) {
      if (plain) throw new UsageError("send: --file is always end-to-end encrypted; leave out --plain", usage);
      if (rest.length) throw new UsageError("send: give either --file PATH or TEXT, not both", usage);
      if (f["--type"] !== undefined && !/^[\w.+-]+\/[\w.+-]+$/.test(f["--type"])) throw new UsageError(`send: --type ${JSON.stringify(f["--type"])} is not a MIME type (like image/jpeg)`, usage);
    } else if (f["--type"] !== undefined) throw new UsageError("send: --type goes with --file", usage);
    if (rest.length && rest.join(" ").trim() === "") throw new UsageError("send: the message is empty; there is nothing to send", usage);
    if (rest.length === 0 && file === undefined && process.stdin.isTTY) console.error(`reading messages for ${to} from stdin, one per line; ctrl-d to finish`);
    let secure: SecureClient | null = null;
    const warn = (m: string) => console.error(`switchboard: warning: ${m}`);
    const { client } = await openClient(f, usage, {
      reconnect: false,
      autoAck: false,
      // Not decrypting what arrives meanwhile: it stays queued, and decryptable, for the next listen or chat.
      setup: async (c) => void (secure = plain ? null : await secureClient(c, statePathFor(f["--key"]!), ["message"])),
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
      if (file !== undefined) {
        const bar = process.stderr.isTTY ? throttled((p) => process.stderr.write(`\r\x1b[K  ${p.phase === "upload" ? "↑" : "…"} ${file} ${progressBar(p)}`)) : undefined;
        try {
          const { sent, attachment } = await s!.sendFile(to, file, { type: f["--type"] ?? typeOf(file), onProgress: bar });
          if (bar) process.stderr.write("\r\x1b[K");
          out({ event: "sent", ...sent, encrypted: true, file, name: attachment.name, size: attachment.size, type: attachment.type, attachment: attachment.id });
        } catch (e) {
          if (bar) process.stderr.write("\n");
          throw e instanceof MediaError ? e : explain(e, client.opts);
        }
      } else if (rest.length) await send(rest.join(" "));
      else for await (const line of createInterface({ input: process.stdin })) if (line.trim()) await send(line);
    } finally {
      await s?.close();
      await client.close();
    }
    return 0;
  },
});

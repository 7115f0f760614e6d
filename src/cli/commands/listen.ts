/**
 * `switchboard listen`: every event of the device as a JSON line, until SIGINT or SIGTERM (or the session ends).
 * Attachments are downloaded, checked and saved under --save-dir as they arrive (a `file` line with the path).
 */
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CONNECTION, defineCommand } from "../command.ts";
import { ServerError, type SwitchboardClient } from "../../client/client.ts";
import { MediaError, statePathFor, type SecureClient } from "../../client/secure.ts";
import { isGroupId } from "../../protocol/stanzas.ts";
import { explain, openClient } from "../connect.ts";
import { secureClient } from "../e2e.ts";
import { DEFAULT_SAVE_DIR, SaveDir } from "../files.ts";
import { interrupted, out } from "../util.ts";

export default defineCommand({
  name: "listen",
  section: "messages",
  synopsis: "listen --key FILE [--no-ack] [--save-dir DIR]",
  summary: `print every event (message, receipt, security code change, device
linked or revoked, ...) as a JSON line; save received files`,
  usage: "switchboard listen --key FILE [--no-ack] [--plain] [--save-dir DIR]",
  flags: [...CONNECTION, "--key", "--no-ack", "--plain", "--save-dir"],
  notes: `A received file is downloaded, its digest and MAC checked, decrypted and saved in --save-dir (default
./${DEFAULT_SAVE_DIR}) under the name its sender gave (made safe; "name (1).ext" when taken); a "file" line
gives its path, a "file_error" line says why one was not saved. On SIGINT, downloads under way are finished first.`,
  async run({ flags: f, usage }) {
    let quitting = false;
    let ended: { reason: string; message?: string } | null = null;
    const stop = interrupted();
    const lost = Promise.withResolvers<void>();
    const noAck = f["--no-ack"] === "true";
    let peekDir: string | null = null;
    const emit = (o: object) => !quitting && out(o);
    const downloads = new Set<Promise<void>>();
    const { client } = await openClient(f, usage, {
      reconnect: true,
      autoAck: !noAck,
      setup: async (c) => {
        if (f["--plain"] === "true") plainEvents(c, emit);
        else peekDir = await secureEvents(c, statePathFor(f["--key"]!), noAck, emit, new SaveDir(f["--save-dir"] ?? DEFAULT_SAVE_DIR), downloads);
        c.on("group", (g) => emit({ event: "group", ...g }));
        c.on("device", (d) => emit({ event: "device", ...d }));
        c.on("receipt", (r) => emit({ event: "receipt", ...r }));
        c.on("typing", (t) => emit({ event: "typing", ...t }));
        c.on("ready", (r) => emit({ event: "ready", ...r }));
        c.on("reconnecting", (r) => emit({ event: "reconnecting", ...r }));
        c.on("error", (e) => emit({ event: "error", code: e.code, message: e.message }));
        c.on("close", (x) => {
          emit({ event: "close", ...x });
          // A final close after the first login (revoked, replaced): the session is over.
          if (!quitting && !x.willReconnect && c.opts.reconnect) {
            ended = x;
            lost.resolve();
          }
        });
      },
    }).catch((e) => {
      stop.cancel();
      if (peekDir) rmSync(peekDir, { recursive: true, force: true });
      throw e;
    });
    await Promise.race([stop.done, lost.promise]);
    if (downloads.size) {
      console.error(`switchboard: finishing ${downloads.size} download${downloads.size === 1 ? "" : "s"}; interrupt again to quit anyway`);
      const again = interrupted();
      await Promise.race([Promise.allSettled([...downloads]), again.done]);
      again.cancel();
    }
    quitting = true;
    stop.cancel();
    await client.close();
    if (peekDir) rmSync(peekDir, { recursive: true, force: true });
    if (ended) {
      const e = ended as { reason: string; message?: string };
      throw explain(new ServerError(e.reason, e.message ?? "the connection closed"), client.opts);
    }
    return 0;
  },
});

function plainEvents(c: SwitchboardClient, emit: (o: object) => void): void {
  const dec = new TextDecoder("utf-8", { fatal: false });
  c.on("message", (m) => emit({ event: "message", conversation: m.conversation, from: m.from, device: m.fromDevice, to: m.to, id: m.id, seq: m.seq, ts: m.ts, sync: m.sync, group: isGroupId(m.to), encrypted: false, text: dec.decode(m.payload) }));
}

/** Decrypting listeners; returns the scratch directory of a peek (--no-ack), to remove at the end. */
async function secureEvents(c: SwitchboardClient, statePath: string, noAck: boolean, emit: (o: object) => void, saveDir: SaveDir, downloads: Set<Promise<void>>): Promise<string | null> {
  let reader: SecureClient;
  let keeper: SecureClient;
  let peekDir: string | null = null;
  if (!noAck) reader = keeper = await secureClient(c, statePath);
  else {
    // A peek: the device's state publishes and refills keys but decrypts nothing; a scratch copy
    // decrypts (and is thrown away), so the next listen decrypts the same messages again. Cost: a
    // message made with a one-time prekey uploaded during this peek shows as undecryptable
    // (unknown_prekey) here, and decrypts on the next listen.
    keeper = await secureClient(c, statePath, ["message"]);
    peekDir = mkdtempSync(join(tmpdir(), "switchboard-peek-")); // mode 0700
    copyFileSync(statePath, join(peekDir, "state.e2e"));
    reader = await secureClient(c, join(peekDir, "state.e2e"), ["ready", "keys", "group", "device"]);
  }
  reader.on("message", (m) => emit({ event: "message", conversation: m.conversation, from: m.from, device: m.fromDevice, to: m.to, id: m.id, seq: m.seq, ts: m.ts, sync: m.sync, group: m.group, encrypted: true, text: m.text }));
  reader.on("attachment", (m) => {
    const a = m.attachment;
    const base = { conversation: m.conversation, from: m.from, device: m.fromDevice, to: m.to, id: m.id, seq: m.seq, ts: m.ts, sync: m.sync, group: m.group, name: a.name, type: a.type, size: a.size };
    const dest = saveDir.claim(a);
    const p = reader
      .download(a, dest)
      .then(
        (r) => emit({ event: "file", ...base, path: r.path }),
        (e: Error) => emit({ event: "file_error", ...base, code: e instanceof MediaError ? e.code : "error", message: e.message }),
      )
      .finally(() => {
        saveDir.release(dest);
        downloads.delete(p);
      });
    downloads.add(p);
  });
  reader.on("undecryptable", (u) => emit({ event: "undecryptable", conversation: u.conversation, from: u.from, device: u.fromDevice, id: u.id, seq: u.seq, reason: u.reason }));
  for (const s of new Set([reader, keeper])) {
    s.on("identityChanged", (e) => emit({ event: "security_code_changed", ...e }));
    s.on("devicesChanged", (e) => emit({ event: "devices_changed", ...e }));
    s.on("error", (e) => emit({ event: "error", message: e.message }));
  }
  // A refusal is already reported through the "error" event above.
  keeper.whenPublished().then(() => emit({ event: "keys_published", kv: keeper.e2e.kv }), () => {});
  return peekDir;
}

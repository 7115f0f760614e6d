/** `switchboard push vapid-keys`: a fresh VAPID key pair for Web Push, as the [push.webpush] block of the config file. */
import { defineCommand } from "../command.ts";
import { out } from "../util.ts";
import { generateVapidKeys } from "../../core/push/webpush.ts";

export default defineCommand({
  name: "push vapid-keys",
  section: "server",
  synopsis: "push vapid-keys [--json]",
  summary: "a new VAPID key pair for Web Push, printed as the config file's [push.webpush] block (docs/PUSH.md)",
  usage: "switchboard push vapid-keys [--json]",
  flags: ["--json"],
  async run({ json }) {
    const k = generateVapidKeys();
    if (json) out({ vapid_public: k.publicKey, vapid_private: k.privateKey });
    else {
      console.log(`[push.webpush]
vapid_public = "${k.publicKey}"
vapid_private = "${k.privateKey}"   # keep it secret; clients subscribed with vapid_public need it unchanged
subject = "mailto:ops@example.org"  # yours: a push service writes here about this server`);
    }
    return 0;
  },
});

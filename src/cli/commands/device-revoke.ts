/**
 * `switchboard device revoke --device N`: ends a device of this account. The
 * account's only device asks first (on a terminal) or needs --yes: without a
 * device, only a new code from `user code` on the server brings the account back.
 */
import { CONNECTION, defineCommand } from "../command.ts";
import { UsageError } from "../args.ts";
import { CloseReason } from "../../protocol/errors.ts";
import { explain, openClient } from "../connect.ts";
import { confirm, need, out } from "../util.ts";

export default defineCommand({
  name: "device revoke",
  section: "devices",
  synopsis: "device revoke --key FILE --device N [--yes]",
  summary: "end a device of your account (--yes: without asking, also for its only device)",
  usage: "switchboard device revoke --key FILE --device N [--yes] [--json]",
  flags: [...CONNECTION, "--key", "--device", "--json", "--yes"],
  async run({ flags: f, json, usage }) {
    const raw = need(f, "--device", "the device id to revoke (see `device list`)", usage);
    const d = Number(raw);
    if (!/^\d+$/.test(raw) || d < 1) throw new UsageError(`--device must be a device id (a number from \`device list\`), got ${JSON.stringify(raw)}`, usage);
    let revokedSelf = false;
    const { client } = await openClient(f, usage, {
      reconnect: false, autoAck: false,
      setup: (c) => void c.on("close", (x) => (revokedSelf ||= x.reason === CloseReason.REVOKED)),
    });
    try {
      const own = await client.devices(client.account);
      if (own.length === 1 && own[0] === d && f["--yes"] !== "true") {
        const what = `device ${d} is the only device of ${client.account}: without it nobody can use the account until \`switchboard user code ${client.account}\` on the server gives a new code`;
        if (!process.stdin.isTTY) throw new UsageError(`${what}\n  pass --yes to revoke it anyway`, usage);
        if (!(await confirm(`${what}.\nrevoke it? [y/N] `))) {
          console.error("switchboard: not revoked");
          return 1;
        }
      }
      await client.request("device.revoke", { d });
    } catch (e) {
      // Revoking the device we are: the server closes this very connection, maybe before it answers.
      if (!(d === client.device && revokedSelf)) throw explain(e, client.opts);
    } finally {
      await client.close();
    }
    if (json) out({ revoked: d, account: client.account });
    else console.log(`revoked ${client.account} device ${d}${d === client.device ? " (this one: its key file no longer works)" : ""}`);
    return 0;
  },
});

/**
 * `switchboard device link`: on a new device, asks to join an account and waits
 * for approval; with --approve CODE, on a device the account already has, approves.
 */
import { CONNECTION, defineCommand } from "../command.ts";
import { linkDevice } from "../../client/client.ts";
import { generateDeviceKey } from "../../client/keys.ts";
import { connectOptions, explain, withClient } from "../connect.ts";
import { checkNewKeyPath, keepNewDevice } from "../e2e.ts";
import { localTime, need, out } from "../util.ts";

export default defineCommand({
  name: "device link",
  section: "devices",
  synopsis: "device link --user NAME [--key FILE] [--name LABEL]",
  summary: `add a device without a code: prints a link code and waits;
on a device the account already has, \`device link --approve CODE --key FILE\` approves it`,
  usage:
    "switchboard device link --user NAME [--key FILE] [--name LABEL] [--json]   (on the new device)\n       switchboard device link --approve CODE --key FILE [--json]               (on an existing device)",
  flags: [...CONNECTION, "--user", "--key", "--name", "--json", "--approve"],
  async run({ flags: f, json, usage }) {
    if (f["--approve"] !== undefined) {
      return withClient(f, usage, async (client) => {
        const r = await client.request<{ d: number }>("link.approve", { code: f["--approve"] });
        if (json) out({ approved: true, device: r.d });
        else console.log(`approved: ${client.account} has a new device ${r.d}`);
        return 0;
      });
    }
    const account = need(f, "--user", "the account to link this new device to (or --approve CODE on an existing device)", usage);
    const keyPath = f["--key"] ?? `${account}-linked.key`;
    checkNewKeyPath(keyPath);
    const conn = connectOptions(f);
    const key = generateDeviceKey();
    let r;
    try {
      r = await linkDevice({
        ...conn, account, key, name: f["--name"] ?? "cli",
        onCode: (code, exp) => {
          if (json) out({ event: "linkcode", code, expires: exp });
          else console.log(`on a device of ${account}, run:\n  switchboard device link --approve ${code} --key <its key file>\nwaiting for approval (until ${localTime(exp)})...`);
        },
      });
    } catch (e) {
      throw explain(e, conn);
    }
    const { account: a, device: d } = r;
    await keepNewDevice(key, r, conn, keyPath, () => (json ? out({ event: "linked", account: a, device: d, key: keyPath }) : console.log(`linked ${a} device ${d}; key written to ${keyPath}`)));
    return 0;
  },
});

/** `switchboard device enroll`: a new device for an account, with a code from `user add` or `user code`. */
import { CONNECTION, defineCommand } from "../command.ts";
import { enrollDevice } from "../../client/client.ts";
import { generateDeviceKey } from "../../client/keys.ts";
import { connectOptions, explain } from "../connect.ts";
import { checkNewKeyPath, keepNewDevice } from "../e2e.ts";
import { need, out } from "../util.ts";

export default defineCommand({
  name: "device enroll",
  section: "devices",
  synopsis: "device enroll --user NAME --code CODE [--key FILE] [--name LABEL]",
  summary: "enroll a device with a code from `user add`; writes NAME.key",
  usage: "switchboard device enroll --user NAME --code CODE [--key FILE] [--name LABEL] [--json]",
  flags: [...CONNECTION, "--user", "--code", "--key", "--name", "--json"],
  async run({ flags: f, json, usage }) {
    const account = need(f, "--user", "the account to enroll a device for", usage);
    const code = need(f, "--code", "the one-time code printed by `switchboard user add`", usage);
    const keyPath = f["--key"] ?? `${account}.key`;
    checkNewKeyPath(keyPath);
    const conn = connectOptions(f);
    const key = generateDeviceKey();
    let r;
    try {
      r = await enrollDevice({ ...conn, account, code, key, name: f["--name"] ?? "cli" });
    } catch (e) {
      throw explain(e, conn);
    }
    const { account: a, device: d } = r;
    await keepNewDevice(key, r, conn, keyPath, () => (json ? out({ account: a, device: d, key: keyPath }) : console.log(`enrolled ${a} device ${d}; key written to ${keyPath}`)));
    return 0;
  },
});

/** `switchboard safety ACCOUNT`: the 60-digit safety number of your account and ACCOUNT, to compare out of band. */
import { CONNECTION, defineCommand } from "../command.ts";
import { UsageError } from "../args.ts";
import { isGroupId } from "../../protocol/stanzas.ts";
import { statePathFor, type DevicesChange, type IdentityChange, type SecureClient } from "../../client/secure.ts";
import { explain, openClient } from "../connect.ts";
import { codeChanged, devicesChangedLine, published, safetyOf, safetyRows, safetyTitle, secureClient } from "../e2e.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "safety",
  section: "messages",
  synopsis: "safety ACCOUNT --key FILE",
  summary: `the 60-digit safety number of your account and ACCOUNT: compare
it with theirs (same digits: nobody sits in between); it changes
when either account adds, removes or re-keys a device`,
  usage: "switchboard safety ACCOUNT --key FILE [--json]",
  flags: [...CONNECTION, "--key", "--json"],
  args: [1, 1],
  async run({ flags: f, rest, json, usage }) {
    const account = rest[0]!;
    if (isGroupId(account)) throw new UsageError("a safety number is between two accounts; for a group, compare it with each member (`group info` lists them)", usage);
    let secure: SecureClient | null = null;
    const { client } = await openClient(f, usage, {
      reconnect: false,
      autoAck: false,
      setup: async (c) => void (secure = await secureClient(c, statePathFor(f["--key"]!), ["message"])),
    });
    const s = secure! as SecureClient;
    const changed: IdentityChange[] = [];
    const devicesChanged: DevicesChange[] = [];
    s.on("identityChanged", (e) => changed.push(e));
    s.on("devicesChanged", (e) => devicesChanged.push(e));
    try {
      await published(s);
      const n = await safetyOf(s, account);
      if (json) out({ account: client.account, with: account, safety_number: n, changed, devices_changed: devicesChanged });
      else {
        const me = client.account;
        for (const e of changed) console.log(codeChanged(e, me, "compare the number below with them again"));
        for (const e of devicesChanged) console.log(devicesChangedLine(e, me, "compare the number below with them again"));
        console.log(`${safetyTitle(me, account)}:`);
        for (const row of safetyRows(n)) console.log(`  ${row}`);
        if (account === me) console.log(`each of your devices shows the same digits (\`switchboard safety ${me}\`) unless someone sits between them; compare them side by side`);
        else console.log(`${account} sees the same digits (\`switchboard safety ${me}\`) unless someone sits between you; compare them in person or over a channel you trust`);
      }
    } catch (e) {
      throw explain(e, client.opts);
    } finally {
      await s.close();
      await client.close();
    }
    return 0;
  },
});

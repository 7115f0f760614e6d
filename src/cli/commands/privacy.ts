/** `switchboard privacy [--last-seen WHO] [--online WHO]`: who sees your last seen and online state; shows it without flags. */
import { UsageError } from "../args.ts";
import type { PrivacyPolicy } from "../../client/presence.ts";
import { CONNECTION, defineCommand } from "../command.ts";
import { withClient } from "../connect.ts";
import { out } from "../util.ts";

const WHO: readonly PrivacyPolicy[] = ["everyone", "contacts", "nobody"];

function policy(f: Record<string, string>, flag: string, usage: string): PrivacyPolicy | undefined {
  const v = f[flag];
  if (v === undefined) return undefined;
  if (!WHO.includes(v as PrivacyPolicy)) throw new UsageError(`${flag} must be everyone, contacts or nobody, got ${JSON.stringify(v)}`, usage);
  return v as PrivacyPolicy;
}

export default defineCommand({
  name: "privacy",
  section: "contacts",
  synopsis: "privacy [--last-seen WHO] [--online WHO] --key FILE",
  summary: "who sees your last seen and online state: everyone, contacts or nobody\n(mutual: what you hide from someone, you do not see of them either)",
  usage: "switchboard privacy [--last-seen everyone|contacts|nobody] [--online everyone|contacts|nobody] --key FILE [--json]",
  flags: [...CONNECTION, "--key", "--json", "--last-seen", "--online"],
  run: ({ flags: f, json, usage }) => {
    const ls = policy(f, "--last-seen", usage);
    const online = policy(f, "--online", usage);
    return withClient(f, usage, async (client) => {
      const p = ls === undefined && online === undefined ? await client.privacy() : await client.setPrivacy({ ...(ls ? { ls } : {}), ...(online ? { online } : {}) });
      if (json) out({ last_seen: p.ls, online: p.online });
      else console.log(`last seen: ${p.ls}\nonline:    ${p.online}`);
      return 0;
    });
  },
});

/** `switchboard config`: the settings table; `--check`: the configuration serve would use, checked as serve checks it. */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { UsageError } from "../args.ts";
import { checkSettings, effectiveToml, resolveSettings, settingsTable } from "../../core/config.ts";

export default defineCommand({
  name: "config",
  section: "server",
  synopsis: "config [--check [--config FILE] [--SETTING VALUE ...]]",
  summary: `list every setting: TOML key, flag, environment variable, default;
with --check, print the configuration that serve would use, and where each
value comes from (exit 1, with every problem found, if serve would refuse it)`,
  usage: "switchboard config [--check [--config FILE] [--SETTING VALUE ...]]",
  flags: [...CONFIG_FLAGS, "--check"],
  async run({ flags }) {
    const { "--check": check, ...rest } = flags;
    if (!check) {
      if (Object.keys(rest).length) throw new UsageError(`config: ${Object.keys(rest)[0]} is read only with --check`);
      console.log(settingsTable());
      return 0;
    }
    const r = resolveSettings({ flags: rest });
    checkSettings(r); // what serve refuses beyond the values themselves (files that must exist)
    console.log(`# effective configuration${r.file ? ` (file ${r.file})` : " (no configuration file)"}`);
    console.log(effectiveToml(r));
    return 0;
  },
});

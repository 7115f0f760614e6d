/** `switchboard device kick USER DEVICE`: closes the device's sessions with `kicked` (it may log in again; `device revoke` ends it). */
import { defineCommand } from "../command.ts";
import { UsageError } from "../args.ts";
import { ADMIN_FLAGS, ADMIN_NOTES, adminCall, refused, userPath } from "../admin.ts";
import { out, plural } from "../util.ts";

export default defineCommand({
  name: "device kick",
  section: "admin",
  synopsis: "device kick USER DEVICE",
  summary: "close a device's sessions (reason kicked); it may log in again",
  usage: "switchboard device kick USER DEVICE [--config FILE | --http-port N] [--json]",
  flags: ADMIN_FLAGS,
  args: [2, 2],
  notes: ADMIN_NOTES,
  async run({ flags, rest, json, usage }) {
    const [name, raw] = rest as [string, string];
    if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new UsageError(`DEVICE must be a device id (a number, as \`device list\` shows it), got ${JSON.stringify(raw)}`, usage);
    const a = await adminCall(flags, "POST", `${userPath(name)}/devices/${raw}/kick`, "device kick");
    if (!a.body.ok) throw refused(a, name);
    const closed = a.body.closed as number;
    if (json) out({ account: name, device: Number(raw), closed });
    else console.log(closed === 0 ? `${name} device ${raw} has no session open; nothing to close` : `closed ${closed} ${plural(closed, "session")} of ${name} device ${raw}`);
    return 0;
  },
});

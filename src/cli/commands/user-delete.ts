/**
 * `switchboard user delete NAME`: deletes an account on the running server:
 * its devices (their sessions close, their keys stop working), their
 * queues, its keys and group memberships, its read marks. Its name stays
 * reserved for queue.retention, so nobody inherits what is still sent to
 * it. Asks first on a terminal; elsewhere it needs --yes.
 */
import { defineCommand } from "../command.ts";
import { UsageError } from "../args.ts";
import { ADMIN_FLAGS, ADMIN_NOTES, adminCall, refused, userPath } from "../admin.ts";
import { confirm, out, plural } from "../util.ts";

export default defineCommand({
  name: "user delete",
  section: "admin",
  synopsis: "user delete NAME [--yes]",
  summary: "delete an account: devices, queues, keys, group memberships; the name\nstays reserved for queue.retention (nobody inherits its conversations)",
  usage: "switchboard user delete NAME [--yes] [--config FILE | --http-port N] [--json]",
  flags: [...ADMIN_FLAGS, "--yes"],
  args: [1, 1],
  notes: ADMIN_NOTES,
  async run({ flags, rest, json, usage }) {
    const name = rest[0]!;
    if (flags["--yes"] !== "true") {
      const what = `deleting ${name} ends its devices and drops everything queued for them; it cannot be undone`;
      if (!process.stdin.isTTY) throw new UsageError(`${what}\n  pass --yes to delete it`, usage);
      if (!(await confirm(`${what}.\ndelete ${name}? [y/N] `))) {
        console.error("switchboard: not deleted");
        return 1;
      }
    }
    const a = await adminCall(flags, "POST", `${userPath(name)}/delete`, "user delete");
    if (!a.body.ok) throw refused(a, name);
    const { devices, dropped } = a.body as { devices: number; dropped: number };
    if (json) out({ deleted: name, devices, dropped });
    else console.log(`deleted ${name}: ${devices} ${plural(devices, "device")}, ${dropped} queued ${plural(dropped, "item")} dropped; the name is reserved for queue.retention`);
    return 0;
  },
});

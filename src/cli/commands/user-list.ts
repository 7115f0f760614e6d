/**
 * `switchboard user list`: every account of the running server, with its devices, whether it is online or
 * disabled. (Last seen is the presence module's, in presence.db: core does not read module data.)
 */
import { defineCommand } from "../command.ts";
import { ADMIN_FLAGS, ADMIN_NOTES, adminCall } from "../admin.ts";
import type { UserRow } from "../../core/admin.ts";
import { localTime, out } from "../util.ts";

export default defineCommand({
  name: "user list",
  section: "admin",
  synopsis: "user list [--json]",
  summary: "every account: created, devices, online, disabled",
  usage: "switchboard user list [--config FILE | --http-port N] [--json]",
  flags: ADMIN_FLAGS,
  notes: `${ADMIN_NOTES}\n--json prints one object per account: {name, created, devices, online, disabled}.`,
  async run({ flags, json }) {
    const a = await adminCall(flags, "GET", "/admin/users", "user list");
    if (a.status !== 200) throw new Error(`the server answered ${a.status}: ${a.body.message ?? JSON.stringify(a.body)}`);
    const users = a.body.users as UserRow[];
    if (json) {
      for (const u of users) out(u);
      return 0;
    }
    if (users.length === 0) {
      console.log("no accounts (create one with `switchboard user add NAME`)");
      return 0;
    }
    const w = Math.max(7, ...users.map((u) => u.name.length));
    console.log(`${"ACCOUNT".padEnd(w)}  CREATED           DEVICES  ONLINE  STATE`);
    for (const u of users) {
      console.log(`${u.name.padEnd(w)}  ${localTime(u.created)}  ${String(u.devices).padStart(7)}  ${String(u.online).padStart(6)}  ${u.disabled ? "disabled" : "active"}`);
    }
    return 0;
  },
});

/**
 * Presence and typing. Typing (`pres`) is ephemeral: relayed to the online
 * devices of its target and never stored. `presence` answers whether an
 * account has a device online and when it was last seen.
 */
import type { Module, Registration } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import { LAST_SEEN_SCHEMA, SqliteLastSeen } from "./last-seen.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { ACCOUNT_NAME_RE, type PresC } from "../../protocol/stanzas.ts";
import type { Conn } from "../../transport/connection.ts";

const presence: Module = {
  name: "presence",
  version: "1.0.0",
  start(ctx: ModuleContext): Registration[] {
    const lastSeen = new SqliteLastSeen(ctx.database("presence", LAST_SEEN_SCHEMA));
    function onPres(conn: Conn, s: PresC): void {
      // Nobody online: nobody to tell, and typing is never stored.
      for (const target of ctx.registry.devices(s.to)) {
        if (target !== conn) target.send({ t: "pres", u: conn.account, d: conn.device, s: s.s });
      }
    }

    function query(_conn: Conn, a: Record<string, unknown>) {
      const u = a.u;
      if (typeof u !== "string" || !ACCOUNT_NAME_RE.test(u)) return { ok: false as const, e: ErrorCode.BAD_FIELD, m: "a.u must be an account name" };
      if (!ctx.directory.exists(u)) return { ok: false as const, e: ErrorCode.UNKNOWN_USER, m: `no account ${u}` };
      const online = ctx.registry.online(u) > 0;
      return { ok: true as const, r: { online, ls: online ? Date.now() : lastSeen.get(u) } };
    }

    return [
      { stanza: "pres", handle: onPres },
      { iq: "presence", handle: query },
      { hook: "account:deleted", handle: (account: string) => lastSeen.drop(account) },
      {
        hook: "session:closed",
        handle: (conn: Conn) => {
          if (ctx.registry.online(conn.account) === 0) lastSeen.set(conn.account, Date.now());
        },
      },
    ];
  },
};

export default presence;

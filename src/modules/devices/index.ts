/**
 * Device lists and revocation. A revoked device's connection is closed with
 * reason `revoked`, its key is refused from then on, and its queue is
 * dropped (nothing can ever be delivered to it again). The account's other
 * devices are told of every device linked or revoked, with a queued `evt`
 * (so an offline phone learns of a new laptop when it comes back, and can
 * show it to its user).
 */
import type { Module, Registration } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import { CloseReason, ErrorCode } from "../../protocol/errors.ts";
import { ItemKind } from "../../core/delivery.ts";
import { ACCOUNT_NAME_RE } from "../../protocol/stanzas.ts";
import type { Conn } from "../../transport/connection.ts";

const devices: Module = {
  name: "devices",
  version: "1.0.0",
  start(ctx: ModuleContext): Registration[] {
    function list(conn: Conn, a: Record<string, unknown>) {
      const u = a.u === undefined ? conn.account : a.u;
      if (typeof u !== "string" || !ACCOUNT_NAME_RE.test(u)) return { ok: false as const, e: ErrorCode.BAD_FIELD, m: "a.u must be an account name" };
      const ds = ctx.directory.devices(u);
      if (ds === null) return { ok: false as const, e: ErrorCode.UNKNOWN_USER, m: `no account ${u}` };
      // Names are the owner's business; others learn only ids (needed to address payloads).
      const own = u === conn.account;
      return {
        ok: true as const,
        r: { u, devices: ds.map((d) => (own ? { d: d.device, name: d.name, created: d.created, kv: d.kv } : { d: d.device, created: d.created, kv: d.kv })) },
      };
    }

    function revoke(conn: Conn, a: Record<string, unknown>) {
      const d = a.d;
      if (typeof d !== "number" || !Number.isInteger(d) || d < 1) return { ok: false as const, e: ErrorCode.BAD_FIELD, m: "a.d must be a device id" };
      const r = ctx.directory.revoke(conn.account, d);
      if (!r.ok) return { ok: false as const, e: r.reason, m: r.message };
      ctx.hooks.run("device:revoked", conn.account, d);
      return { ok: true as const, r: {} };
    }

    /** Queues `evt {k: "dev"}` to every active device of the account but the one it is about. */
    function tell(account: string, device: number, op: "linked" | "revoked", name: string | undefined): void {
      const ts = Date.now();
      const stanza: { t: string; q: number; [k: string]: unknown } = { t: "evt", q: 0, k: "dev", op, u: account, d: device, ts };
      if (name !== undefined) stanza.name = name;
      ctx.accept.toDevices(account, { kind: ItemKind.EVENT, fromAccount: account, fromDevice: device, cid: "", seq: 0, ts }, stanza, device);
    }

    function onAdded(account: string, device: number): void {
      tell(account, device, "linked", ctx.directory.devices(account)?.find((x) => x.device === device)?.name);
    }

    function onRevoked(account: string, device: number): void {
      for (const c of ctx.registry.sessionsOf(account, device)) c.close(CloseReason.REVOKED, "this device was revoked");
      const dropped = ctx.queues.dropDevice(account, device);
      ctx.log.info("device revoked", { account, device, dropped });
      tell(account, device, "revoked", undefined);
    }

    return [
      { iq: "devices", handle: list },
      { iq: "device.revoke", handle: revoke },
      { hook: "device:revoked", handle: onRevoked },
      { hook: "device:added", handle: onAdded },
    ];
  },
};

export default devices;

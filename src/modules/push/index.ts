/**
 * Push notifications, the rules (issue 14; the mechanism is core's,
 * src/core/push/service.ts; operators read docs/PUSH.md):
 * - a device registers one endpoint (`push.set`), replaces it by registering
 *   again, removes it (`push.clear`); `push.get` says what is registered and
 *   which providers this server has (and its VAPID key, for Web Push);
 * - only messages wake a device (1:1 and group copies): receipts, events,
 *   gap notices and sync copies of one's own messages never do, and typing
 *   and presence are never queued at all;
 * - a silent (background) push first; a visible one when the queue is still
 *   undrained `push.escalate_after` seconds later; then nothing more until
 *   the device logs in;
 * - a login closes the device's job; a connection lost with items still
 *   queued opens one; a revoked device's endpoint and job are dropped;
 * - an endpoint the provider calls dead is removed, unless the device
 *   registered again since the push that found it dead;
 * - an APNs VoIP (PushKit) token has a slot of its own and is used for rings
 *   only (core's `ring`, for calls): a message never goes to it.
 */
import { accountTables, touchedAccounts, type Module, type Registration, type IqReply, type ShardRows } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import type { Config } from "../../core/config.ts";
import { ItemKind, type QueueItem } from "../../core/delivery.ts";
import type { PushPolicy } from "../../core/push/service.ts";
import type { ProviderName } from "../../core/push/types.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { validatePushEndpoint } from "../../protocol/stanzas.ts";
import type { Conn } from "../../transport/connection.ts";
import { EndpointStore, PUSH_SCHEMA } from "./store.ts";

const PROVIDER: Record<string, ProviderName> = { apns: "apns", fcm: "fcm", webpush: "webpush", webhook: "webhook" };

/** The running instance's way out: its policy leaves core with it (a reload installs the new one first, then stops the old). */
let running: { policy: PushPolicy; ctx: ModuleContext<Config["push"]> } | null = null;

const push: Module<Config["push"]> = {
  name: "push",
  version: "1.1.0",
  start(ctx: ModuleContext<Config["push"]>): Registration[] {
    const cfg = ctx.options;
    const pushDb = ctx.database("push", PUSH_SCHEMA);
    const store = new EndpointStore(pushDb);
    const removed = ctx.metrics.counter("switchboard_push_endpoints_removed_total", "Push endpoints removed because their provider called them invalid.");
    ctx.metrics.gauge("switchboard_push_endpoints", "Devices with a push endpoint registered.", () => store.size);

    const policy: PushPolicy = {
      // Only what a person sent wakes a phone; a sync copy is of a message its own user just sent elsewhere.
      wakes: (it: QueueItem) => it.kind === ItemKind.MESSAGE || it.kind === ItemKind.GROUP,
      target: (account, device) => store.get(account, device)?.target ?? null,
      ringTarget: (account, device) => (store.getVoip(account, device) ?? store.get(account, device))?.target ?? null,
      // Silent first, at once; visible once the queue has waited push.escalate_after more (0: never visible).
      stage: (i) => (i === 0 ? { urgency: "silent", afterMs: 0 } : i === 1 && cfg.escalateAfter > 0 ? { urgency: "alert", afterMs: cfg.escalateAfter * 1000 } : null),
      remove: (account, device, reason, slot) => {
        if (!store.remove(account, device, slot)) return;
        removed.inc();
        ctx.log.info("push endpoint removed: its provider calls it invalid", { account, device, reason, slot });
      },
    };
    running = { policy, ctx };
    ctx.push.setPolicy(policy);

    const set = async (conn: Conn, a: Record<string, unknown>): Promise<IqReply> => {
      const v = validatePushEndpoint(a);
      if (!v.ok) return { ok: false, e: ErrorCode.BAD_FIELD, m: v.m };
      const e = v.e;
      // The topic of VoIP pushes names a PushKit token as surely as the flag does.
      if (e.p === "apns" && e.topic !== undefined && e.topic === `${cfg.apns.topic}.voip`) e.voip = true;
      if (!ctx.push.configured.includes(PROVIDER[e.p]!)) {
        return { ok: false, e: ErrorCode.PUSH_UNAVAILABLE, m: `this server has no ${e.p} credentials; push.get lists the providers it has` };
      }
      if (e.p === "apns" && e.topic !== undefined && e.topic !== cfg.apns.topic && e.topic !== `${cfg.apns.topic}.voip`) {
        return { ok: false, e: ErrorCode.BAD_FIELD, m: `push.set.topic ${e.topic} is not this server's app (${cfg.apns.topic})` };
      }
      if (e.p === "webpush") {
        // The server will POST to this URL: refuse one it must never call (private networks: SSRF) now, not at the first push.
        const c = await ctx.push.checkEndpoint(e.endpoint);
        if (!c.ok) return { ok: false, e: ErrorCode.BAD_FIELD, m: `push.set.endpoint refused: ${c.reason}` };
      }
      const r = store.set(conn.account, conn.device, e, Date.now());
      return { ok: true, r: e.p === "apns" && e.voip ? { p: e.p, at: r.target.registeredAt, voip: true } : { p: e.p, at: r.target.registeredAt } };
    };

    return [
      { iq: "push.set", handle: set },
      {
        iq: "push.clear",
        handle: (conn: Conn, a: Record<string, unknown>): IqReply => {
          if (a.voip !== undefined && typeof a.voip !== "boolean") return { ok: false, e: ErrorCode.BAD_FIELD, m: "push.clear.voip must be a boolean" };
          if (a.voip === true) return { ok: true, r: { removed: store.remove(conn.account, conn.device, "voip") } }; // messages still wake the regular one
          const had = store.remove(conn.account, conn.device);
          ctx.push.forget(conn.account, conn.device);
          return { ok: true, r: { removed: had } };
        },
      },
      {
        iq: "push.get",
        handle: (conn: Conn): IqReply => {
          const r: Record<string, unknown> = { e: store.get(conn.account, conn.device)?.endpoint ?? null, providers: [...ctx.push.configured] };
          const voip = store.getVoip(conn.account, conn.device);
          if (voip !== undefined) r.voip = voip.endpoint;
          if (ctx.push.configured.includes("webpush")) r.vapid = cfg.webpush.vapidPublic;
          return { ok: true, r };
        },
      },
      { hook: "session:ready", handle: (conn: Conn) => void ctx.push.connected(conn.account, conn.device) },
      {
        hook: "session:closed",
        handle: (conn: Conn) => ctx.push.wake(conn.account, conn.device), // only if what waits includes messages
      },
      {
        hook: "account:deleted",
        handle: (account: string) => {
          for (const d of store.removeAccount(account)) ctx.push.forget(account, d);
        },
      },
      {
        // Cluster: the endpoints go with the account's home shard (docs/CLUSTER.md "Moving shards"); pending jobs do not.
        hook: "shard:rows",
        handle: (o: ShardRows) => {
          const tables = [["endpoints", "account"], ["voip", "account"]] as const;
          accountTables(pushDb, "push", tables, o);
          if (o.op !== "export") store.reload(touchedAccounts("push", tables, o)); // in chunks: rows of accounts an earlier chunk named too
        },
      },
      {
        hook: "device:revoked",
        handle: (account: string, device: number) => {
          store.remove(account, device);
          ctx.push.forget(account, device);
        },
      },
    ];
  },
  stop() {
    running?.ctx.push.setPolicy(null);
    running = null;
  },
};

export default push;

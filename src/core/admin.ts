/**
 * The operator's controls of a running server: what `switchboard status`,
 * `user list|delete|disable|enable` and `device kick` ask for over the
 * loopback admin API (src/core/http.ts). They run here, in the server
 * process, because each one must also act on live state a CLI process
 * cannot reach: the sessions to close, the directory cache, the queues
 * buffered in memory, and the modules' own data (the `account:deleted` hook).
 */
import { CloseReason, ErrorCode, fail, ok, type Result } from "../protocol/errors.ts";
import { ACCOUNT_NAME_RE } from "../protocol/stanzas.ts";
import type { AccountStore, AccountSummary } from "../store/accounts.ts";
import type { StorageAlarm, StorageFault } from "../store/errors.ts";
import type { DeliveryQueue } from "../store/queue.ts";
import type { Conn, Transport } from "../transport/connection.ts";
import type { Config } from "./config.ts";
import type { Delivery } from "./delivery.ts";
import type { Directory } from "./directory.ts";
import type { Home } from "./cluster/node.ts";
import type { Hooks } from "./hooks.ts";
import type { ReadinessProbe } from "./http.ts";
import type { LoadedModule } from "./loader.ts";
import { log } from "./log.ts";
import type { Histogram } from "./metrics.ts";
import type { Registry } from "./registry.ts";
import { isInternalAccount } from "./session.ts";
import pkg from "../../package.json" with { type: "json" };

export interface AdminDeps {
  config: Config;
  accounts: AccountStore;
  directory: Directory;
  registry: Registry<Conn>;
  delivery: Delivery;
  hooks: Hooks;
  queue: DeliveryQueue;
  storage: StorageAlarm;
  commitLatency: Histogram;
  connections(t: Transport): number;
  /** Authenticated sessions, the canary's left out (as the switchboard_sessions gauge). */
  sessions(): number;
  modules(): LoadedModule[];
  readiness(): ReadinessProbe | null;
  /** Cluster mode's status (GET /cluster, src/core/cluster/node.ts); null on a single node. */
  cluster(): object | null;
  /** Cluster mode: where the account is homed now (ClusterNode.home); null on a single node. */
  home(account: string): Home | null;
}

export interface Status {
  version: string;
  pid: number;
  started: number;
  uptime_s: number;
  connections: Record<Transport, number>;
  sessions: number;
  queue: { depth: number; oldest_age_s: number | null };
  commit: { count: number; p50_ms: number; p99_ms: number };
  canary: { ok: boolean; [detail: string]: unknown } | "off";
  storage: { ok: boolean; faults: StorageFault[] };
  /** "single", or "node" of a cluster (docs/CLUSTER.md): its id, the shards it holds, whether it reaches Redis. */
  cluster: { role: "single" } | { role: "node"; node: string; held: number; nodes: number; redis_up: boolean };
  modules: { name: string; version: string }[];
}

export interface UserRow extends AccountSummary {
  online: number;
}

function clusterRole(c: object | null): Status["cluster"] {
  if (c === null) return { role: "single" };
  const st = c as { node: string; held: number; nodes: unknown[]; redis: { up: boolean } };
  return { role: "node", node: st.node, held: st.held, nodes: st.nodes.length, redis_up: st.redis.up };
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

export class Admin {
  private readonly started = Date.now();

  constructor(private readonly d: AdminDeps) {}

  status(now = Date.now()): Status {
    const d = this.d;
    let depth = 0;
    let oldest: number | null = null;
    for (const s of d.queue.shardStats()) {
      depth += s.depth;
      if (s.oldestTs !== null && (oldest === null || s.oldestTs < oldest)) oldest = s.oldestTs;
    }
    const h = d.commitLatency;
    const probe = d.readiness();
    return {
      version: pkg.version,
      pid: process.pid,
      started: this.started,
      uptime_s: Math.floor((now - this.started) / 1000),
      connections: { tcp: d.connections("tcp"), tls: d.connections("tls"), ws: d.connections("ws") },
      sessions: d.sessions(),
      queue: { depth, oldest_age_s: oldest === null ? null : round(Math.max(0, now - oldest) / 1000, 1) },
      commit: { count: h.count, p50_ms: round(h.quantile(0.5) / 1000), p99_ms: round(h.quantile(0.99) / 1000) },
      canary: probe === null ? "off" : probe(),
      storage: { ok: !d.storage.active, faults: d.storage.list() },
      cluster: clusterRole(d.cluster()),
      modules: d.modules().map((m) => ({ name: m.name, version: m.version })),
    };
  }

  /** Every account but the server's own (the canary's), by name. */
  users(): UserRow[] {
    return this.d.accounts
      .accountSummaries()
      .filter((a) => !isInternalAccount(a.name))
      .map((a) => ({ ...a, online: this.d.registry.online(a.name) }));
  }

  /**
   * Deletes an account: its sessions close (`revoked`: its keys are gone), the store deletes it and
   * reserves its name for queue.retention, every queue of its devices is dropped, and each module
   * deletes its part (`account:deleted`: keys, group memberships, read marks, last seen). What it
   * sent to others stays theirs, in their queues.
   */
  deleteUser(name: string): Result<{ devices: number; dropped: number }> {
    const bad = this.check(name);
    if (bad) return bad;
    const d = this.d;
    // The name stays reserved for a ticket lifetime at least: its tombstone is what refuses a ticket of the deleted
    // account's devices after a restart (Directory.watchLogins), whose ids a new account of the name would reuse.
    const r = d.accounts.deleteAccount(name, Date.now() + Math.max(d.config.queue.retention, d.config.auth.ticketLifetime) * 1000);
    if (!r.ok) return r;
    d.directory.forget(name);
    this.closeAll(name, r.value.devices, CloseReason.REVOKED, "the account was deleted");
    let dropped = 0;
    for (const dev of r.value.devices) dropped += d.delivery.dropDevice(name, dev);
    d.hooks.run("account:deleted", name);
    log.info("account deleted", { account: name, devices: r.value.devices.length, dropped });
    return ok({ devices: r.value.devices.length, dropped });
  }

  /** Disables (logins refused with `account_disabled`, live sessions closed) or enables an account; its data stays. */
  setDisabled(name: string, disabled: boolean): Result<{ changed: boolean; closed: number }> {
    const bad = this.check(name);
    if (bad) return bad;
    const r = this.d.accounts.setDisabled(name, disabled);
    if (!r.ok) return r;
    this.d.directory.forget(name); // its login state (a resume reads no accounts.db: Directory.disabledLogin)
    const closed = disabled ? this.closeAll(name, this.d.accounts.devices(name).map((x) => x.device), CloseReason.ACCOUNT_DISABLED, "the account was disabled") : 0;
    if (r.value.changed) log.info(disabled ? "account disabled" : "account enabled", { account: name, closed });
    return ok({ changed: r.value.changed, closed });
  }

  /** Closes every session of one device with `kicked`; it may log in again. */
  kick(name: string, device: number): Result<{ closed: number }> {
    const bad = this.check(name);
    if (bad) return bad;
    if (!this.d.directory.exists(name)) return fail(ErrorCode.UNKNOWN_USER, `no account ${name}`);
    if (!this.d.directory.deviceIds(name)!.includes(device)) return fail(ErrorCode.UNKNOWN_DEVICE, `account ${name} has no active device ${device}`);
    const closed = this.closeAll(name, [device], CloseReason.KICKED, "an operator closed this session");
    log.info("device kicked", { account: name, device, closed });
    return ok({ closed });
  }

  private check(name: string): Result<never> | null {
    if (!ACCOUNT_NAME_RE.test(name)) return fail(ErrorCode.BAD_FIELD, `${JSON.stringify(name)} is not an account name`);
    if (isInternalAccount(name)) return fail(ErrorCode.FORBIDDEN, `${name} is the server's own account (its readiness canary)`);
    // In a cluster an account's rows and sessions are on its home only. A change made elsewhere, or on the home while
    // its shard is frozen for a move (after the snapshot went, before the flip), would be lost with the move: the new
    // home would keep the account alive, enabled, with the device logged in.
    const h = this.d.home(name);
    if (h === null || h.kind === "local") return null;
    if (h.kind === "remote") return fail(ErrorCode.FORBIDDEN, `${name} is homed on node ${h.node}, not here: run the command against that node (its --config or --http-port)`);
    return fail(ErrorCode.RETRY_AFTER, `${name}'s home shard ${h.shard} ${h.node === null ? "has no live node now" : `is moving or not served by ${h.node} now`}: try again in ${Math.ceil(h.retryMs / 1000)} s`, { retry_ms: h.retryMs });
  }

  private closeAll(account: string, devices: readonly number[], reason: CloseReason, message: string): number {
    let n = 0;
    for (const dev of devices) {
      for (const c of this.d.registry.sessionsOf(account, dev)) {
        c.close(reason, message);
        n++;
      }
    }
    return n;
  }
}

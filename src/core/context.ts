/**
 * Two contexts. `ServerContext` is core's own (login, dispatch): every
 * service. `ModuleContext` is what a module gets (`start(ctx)`): narrowed
 * views with just what a module may do, built per module by
 * `moduleContext` below. Modules hold no references to the listeners, the
 * stores or the queue; everything goes through here, so a reloaded module
 * finds the same state.
 */
import type { Migration } from "../store/schema.ts";
import type { Database } from "bun:sqlite";
import type { Config } from "./config.ts";
import type { Accept } from "./accept.ts";
import { factsChanged, type PeerFacts } from "./facts.ts";
import type { Delivery } from "./delivery.ts";
import type { Directory } from "./directory.ts";
import type { Hooks } from "./hooks.ts";
import type { Metrics } from "./metrics.ts";
import type { Registry } from "./registry.ts";
import type { AccountStore } from "../store/accounts.ts";
import type { Usage } from "../store/queue.ts";
import type { HookArgs, HookName } from "./module.ts";
import type { Conn } from "../transport/connection.ts";
import type { ErrorCode } from "../protocol/errors.ts";
import type { SeqAllocator } from "./seq.ts";
import type { Trace } from "./trace.ts";
import type { log } from "./log.ts";
import type { PushService } from "./push/service.ts";
import { join } from "node:path";
import { COMMIT_RETRY_MS, storageCause, type StorageAlarm } from "../store/errors.ts";

/**
 * The other nodes of a cluster, as a module sees them (cluster mode, docs/CLUSTER.md): where an account lives,
 * and one narrow item kind over the node links (forward.ts `p`), received by the `peer:presence` hook on the
 * peer. On a single node `home` is always null and nothing is ever sent.
 */
export interface PeerView {
  /** The id of the node that homes `account` when that is another node; null when it is this one (or no cluster). */
  home(account: string): string | null;
  /**
   * A presence item to a peer node: in order with what was sent there before, retried across reconnects, not stored.
   * Resolves once the peer has handled it (the link's ack); never on a single node (undefined).
   */
  send(node: string, body: unknown): Promise<void> | undefined;
  /** The other nodes of the cluster; empty on a single node (and before the cluster node exists). */
  nodes(): readonly string[];
  /** Groups `account` is in on the other cluster nodes, as they answered before this `group.create`/`group.add` (0: no cluster). */
  groupsElsewhere(account: string): number;
}

/** Core's context: everything (src/core/session.ts, the module loader). Modules get a ModuleContext. */
export interface ServerContext {
  readonly config: Config;
  readonly accounts: AccountStore;
  readonly directory: Directory;
  readonly registry: Registry<Conn>;
  readonly delivery: Delivery;
  /** The acceptance pipeline of messages (dedup, durability, `sent`, fan-out to an account's devices): src/core/accept.ts. */
  readonly accept: Accept;
  /** What a message or receipt needs of its pair of accounts, kept on the connection until a change (src/core/facts.ts). */
  readonly facts: PeerFacts;
  readonly seqs: SeqAllocator;
  readonly metrics: Metrics;
  readonly hooks: Hooks;
  readonly log: typeof log;
  /** Delivery traces (GET /trace): a module records a message's acceptance, durability and reads; core the rest. */
  readonly trace: Trace;
  /** Which store files cannot commit (disk full, I/O error): new sends are refused while any cannot. */
  readonly storage: StorageAlarm;
  /**
   * Push notifications: the push module installs its rules (setPolicy) and reports logins and lost connections;
   * `ring(account, device)` wakes a device for an incoming call (the calls module; src/core/push/service.ts, docs/PUSH.md).
   */
  readonly push: Pick<PushService, "setPolicy" | "wake" | "connected" | "forget" | "configured" | "checkEndpoint" | "ring">;
  /** Sends an `err` frame (an expected failure or a refused stanza). */
  sendError(conn: Conn, code: ErrorCode, message: string, id?: string | number, detail?: unknown): void;
  /**
   * A module's own SQLite file, `data_dir/<name>.db`, opened as every store here is (WAL, the server's
   * durability): the same handle for the same name for the life of the process (it survives reloads),
   * closed at shutdown. Module data lives here, not in core's stores. `schema` is the file's migration
   * steps (src/store/schema.ts): core brings the file to their version before handing it out, or throws
   * (a file newer than the module, or damaged).
   */
  database(name: string, schema: readonly Migration[]): Database;
  /** Module state that survives reloads: the same object for the same name for the life of the process. */
  shared<T extends object>(name: string, init: () => T): T;
  /** The cluster's other nodes (home of an account, presence items); inert on a single node. */
  readonly peers: PeerView;
}

/** Accounts and devices as a module may see and change them (login, enrollment and the store behind are core's). */
export type DirectoryView = Pick<Directory, "exists" | "deviceIds" | "devices" | "keyVersion" | "setKeyVersion" | "revoke" | "ready">;

/** Who is online, read-only (the registry's adding and removing is core's). */
export type OnlineView = Pick<Registry<Conn>, "devices" | "sessionsOf" | "online">;

/**
 * Running hooks (a module telling others of an event), and asking the `contact:check` rule (blocks,
 * strangers: Hooks.check); registering is by `start`'s return value, never by a call.
 */
export type HookRunner = Pick<Hooks, "run" | "check">;

/**
 * The per-connection facts about a conversation's peer (src/core/facts.ts), and how a module whose rule declares its
 * answers cacheable (ContactCheck.cacheable) reports a change that could alter one: `changed()`, before it answers ok.
 */
export type FactsView = Pick<PeerFacts, "msg" | "receipt" | "receiptIds"> & { changed(): void };

/** What a module may know and do of the device queues: their bounds and usage, and dropping a revoked device's queue. */
export interface QueueView {
  /** Items and bytes queued for one device (a bounds check before accepting). */
  usage(account: string, device: number): Usage;
  /** queue.max_messages, queue.max_bytes: what one device's queue may hold. */
  readonly maxMessages: number;
  readonly maxBytes: number;
  /** queue.retention (seconds an item is kept) and queue.expire_every (seconds between sweeps): a module's own rows about queued items live as long. */
  readonly retention: number;
  readonly expireEvery: number;
  /** Drops every item queued for a device (it was revoked: nothing can reach it any more); returns how many. */
  dropDevice(account: string, device: number): number;
}

/**
 * How a module reports that a write of its own file (ctx.database) failed, without importing src/store/:
 * core classifies the error (src/store/errors.ts) and raises or clears the storage alarm, as the queue's
 * commits do (issue 17: a SQLITE_FULL thrown from a module's timer killed the process).
 */
export interface StorageView {
  /**
   * A write of `database`'s file threw `err`. True when the disk is the cause (the alarm is raised, naming the
   * file): the write was rolled back whole, so the module keeps what it buffered and tries again in `retryMs`.
   * False for anything else (a bug, a constraint): the module throws it on.
   */
  fault(database: string, err: unknown): boolean;
  /** The disk's part in `err` ("disk_full", "io_error"), or null when the disk is not the cause; raises nothing. */
  cause(err: unknown): string | null;
  /** A write of `database`'s file succeeded again: its alarm, if raised, is cleared. */
  healthy(database: string): void;
  /** How soon a write that failed on the disk is tried again (the queue's COMMIT_RETRY_MS). */
  readonly retryMs: number;
}

/**
 * What a module sees of the server (`Module.start(ctx)`). No stores, no
 * queue, no global config: the module's own options, the core services it
 * may call, and files and state of its own.
 */
export interface ModuleContext<Options = unknown>
  extends Pick<ServerContext, "accept" | "seqs" | "metrics" | "log" | "trace" | "sendError" | "database" | "shared" | "push" | "peers"> {
  /** The module's options: the config block named like the module (`[keys]` for keys); {} when there is none. */
  readonly options: Options;
  readonly directory: DirectoryView;
  readonly queues: QueueView;
  readonly registry: OnlineView;
  readonly hooks: HookRunner;
  readonly storage: StorageView;
  readonly facts: FactsView;
}

/**
 * The context of one module. Built once per start (not per message): its
 * views are plain objects over core's services, so a module's per-message
 * calls cost what they did when it held the services themselves.
 */
export function moduleContext(ctx: ServerContext, name: string): ModuleContext {
  const block = (ctx.config as unknown as Record<string, unknown>)[name];
  const q = ctx.config.queue;
  const { registry, hooks, delivery, directory } = ctx;
  return {
    options: block !== null && typeof block === "object" ? block : {},
    // Views are objects of their own (a module cannot reach the store behind the directory, or the queue behind
    // usage). The extra call is lost in the noise: `bun loadtest/microbench.ts`, 3 runs, Directory.deviceIds
    // 15-33 ns direct and 21-25 ns through a view like these (arrows measured cheaper than bound methods here);
    // a 1:1 message makes 4 or 5 such calls, against tens of µs of server CPU per message.
    directory: {
      exists: (account) => directory.exists(account),
      deviceIds: (account) => directory.deviceIds(account),
      devices: (account) => directory.devices(account),
      keyVersion: (account, device) => directory.keyVersion(account, device),
      setKeyVersion: (account, device, kv) => directory.setKeyVersion(account, device, kv),
      revoke: (account, device) => directory.revoke(account, device),
      ready: (accounts) => directory.ready(accounts),
    },
    accept: ctx.accept,
    facts: {
      msg: (conn, to) => ctx.facts.msg(conn, to),
      receipt: (conn, from, to) => ctx.facts.receipt(conn, from, to),
      receiptIds: (f) => ctx.facts.receiptIds(f),
      changed: factsChanged,
    },
    seqs: ctx.seqs,
    queues: {
      usage: (account, device) => delivery.usage(account, device),
      maxMessages: q.maxMessages,
      maxBytes: q.maxBytes,
      retention: q.retention,
      expireEvery: q.expireEvery,
      dropDevice: (account, device) => delivery.dropDevice(account, device),
    },
    registry: {
      devices: (account) => registry.devices(account),
      sessionsOf: (account, device) => registry.sessionsOf(account, device),
      online: (account) => registry.online(account),
    },
    hooks: {
      run: <H extends HookName>(hook: H, ...args: HookArgs[H]) => hooks.run(hook, ...args),
      check: (kind, from, to) => hooks.check(kind, from, to),
    },
    metrics: ctx.metrics,
    log: ctx.log,
    trace: ctx.trace,
    sendError: (conn, code, message, id, detail) => ctx.sendError(conn, code, message, id, detail),
    database: (db, schema) => ctx.database(db, schema),
    shared: (key, init) => ctx.shared(key, init),
    peers: ctx.peers,
    storage: {
      fault(database, err) {
        const cause = storageCause(err);
        if (cause === null) return false;
        ctx.storage.raise(join(ctx.config.dataDir, `${database}.db`), cause, (err as Error).message);
        return true;
      },
      cause: (err) => storageCause(err),
      healthy: (database) => void ctx.storage.clear(join(ctx.config.dataDir, `${database}.db`)),
      retryMs: COMMIT_RETRY_MS,
    },
    push: {
      setPolicy: (policy) => ctx.push.setPolicy(policy),
      wake: (account, device) => ctx.push.wake(account, device),
      connected: (account, device) => ctx.push.connected(account, device),
      forget: (account, device) => ctx.push.forget(account, device),
      checkEndpoint: (endpoint) => ctx.push.checkEndpoint(endpoint),
      ring: (account, device) => ctx.push.ring(account, device),
      get configured() {
        return ctx.push.configured;
      },
    },
  };
}

/**
 * The end-to-end canary behind /readyz. Two internal devices, each in its own
 * reserved account, talk to this very server the way any client does: over
 * a real loopback connection to its own listener, with the SDK. Every
 * `canary.interval` seconds device A sends a message to device B; a round
 * trip is complete when A has `sent` (the message is durable), B has the
 * message (and acks it), and A has the `dlv` receipt. That is the whole
 * path: listener, framing, login, the messaging module, the queue and its
 * group commit, delivery, acks and receipts. /readyz is 200 while the last
 * complete round trip is at most `canary.threshold` seconds old.
 *
 * Two accounts, not one account with two devices: a note to self yields sync
 * copies and no `dlv` receipt, and the receipt is half of what is checked.
 *
 * Identity: the accounts (`switchboard.canary-a`, `switchboard.canary-b`;
 * the `switchboard.` prefix is refused by `user add`) and their devices are
 * created by the server itself, straight in its store, and the device keys
 * kept under DATA_DIR/canary/ (mode 0600). A key that no longer matches (a
 * wiped folder, a revoked device) is replaced on the next start or redial:
 * the account's old devices are revoked, a new one is added.
 *
 * In a cluster (`cross` set) a third device, of this node's cross-node
 * account (`crossCanaryAccount`: homed on this node, not hashed), also sends
 * every interval to the cross-node account of one other node that is up,
 * taking them in turn: a round there is complete when it has `sent` (durable
 * on that node) and the `dlv` receipt (that node's device got it and acked
 * it, the receipt came back over the link). /readyz answers 503
 * `cross_node` while a node that is up has had a round outstanding (sent to
 * it, none completed since) for longer than `canary.threshold`: this node
 * cannot reach the accounts of that node. A node that is down (no heartbeat)
 * is not counted: its accounts get retry_after, which is not this node's
 * fault, and a load balancer should not drop the nodes that are left.
 *
 * What it adds to the user-facing metrics: its logins, sessions and closes
 * are left out (src/core/session.ts, server.ts); its messages (one per
 * interval) do count in switchboard_messages_* and the delivery latency, and
 * its two connections in switchboard_connections (they are real sockets).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { SwitchboardClient, ServerError, newMessageId, type ConnectOptions } from "../client/client.ts";
import { generateDeviceKey, keyToFile, readKeyFile, writeKeyFile, type KeyFile } from "../client/keys.ts";
import type { Counter, Histogram } from "../core/metrics.ts";
import type { SwitchboardServer } from "../core/server.ts";
import { INTERNAL_ACCOUNT_PREFIX } from "../core/session.ts";
import { log } from "../core/log.ts";
import { crossCanaryAccount } from "../core/cluster/shards.ts";

export const CANARY_SENDER = `${INTERNAL_ACCOUNT_PREFIX}canary-a`;
export const CANARY_RECEIVER = `${INTERNAL_ACCOUNT_PREFIX}canary-b`;

/** Rounds in flight at most; when delivery is stuck, the canary stops adding to the backlog. */
const MAX_OUTSTANDING = 8;
/** A redial after `replaced` (someone else logged in with the canary's key) waits this many thresholds, doubling. */
const REPLACED_BACKOFF = 2;

interface Round {
  id: string;
  /** The node of a cross-node round (sent by device x to that node's account); null for the local round (a to b). */
  peer: string | null;
  started: number;
  t0: number;
  sent: boolean;
  received: boolean;
  dlv: boolean;
}

type Side = "a" | "b" | "x";

export interface CanaryOptions {
  /** Where the server listens (the canary's own end of the loopback). */
  connect: ConnectOptions;
  intervalMs: number;
  thresholdMs: number;
  /** In a cluster: this node's cross-node account, and the other nodes up now with theirs. */
  cross?: { account: string; peers: () => { node: string; account: string }[] };
}

/** A type, not an interface: it must fit ReadinessProbe's index signature. */
export type CanaryStatus = {
  ok: boolean;
  reason?: "not_started" | "failed" | "lagging" | "disconnected" | "cross_node";
  canary: {
    /** Seconds since the last complete round trip (null: none yet). */
    last_ok_age_s: number | null;
    last_rtt_ms: number | null;
    outstanding: number;
    connected: boolean;
    error?: string;
    /** In a cluster: the cross-node rounds. */
    cross?: {
      connected: boolean;
      /** Per node up now: seconds since its last complete round (null: none yet), and since the oldest round outstanding to it. */
      peers: Record<string, { last_ok_age_s: number | null; outstanding_s: number | null }>;
      last_rtt_ms: number | null;
      /** The nodes up with a round outstanding longer than the threshold (then /readyz is 503 cross_node). */
      lagging: string[];
      error?: string;
    };
  };
};

/** Where a loopback client reaches a listener bound to `host`. */
export function loopbackHost(host: string): string {
  if (host === "" || host === "0.0.0.0" || host === "localhost") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "::1";
  return host;
}

export class Canary {
  private clients: Record<Side, SwitchboardClient | null> = { a: null, b: null, x: null };
  private redials: Record<Side, { attempt: number; timer: ReturnType<typeof setTimeout> | null }> = {
    a: { attempt: 0, timer: null },
    b: { attempt: 0, timer: null },
    x: { attempt: 0, timer: null },
  };
  /** Cross-node rounds, per node: its last complete one, and since when one has been outstanding (null: none). */
  private peers = new Map<string, { lastOk: number | null; pendingSince: number | null }>();
  private crossNext = 0;
  private introduced = false;
  private crossRttMs: number | null = null;
  private crossFailure: string | null = null;
  private rounds = new Map<string, Round>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private stopping = false;
  private startedAt = Date.now();
  private lastOk: number | null = null;
  private lastRttMs: number | null = null;
  private lastFailure: { at: number; error: string } | null = null;
  private m: { rtt: Histogram; ok: Counter; failed: Counter; crossOk: Counter };

  constructor(private server: SwitchboardServer, private o: CanaryOptions) {
    const mt = server.metrics;
    mt.gauge("switchboard_canary_age_seconds", "Seconds since the last complete canary round trip (since the canary started, before the first).", () =>
      (Date.now() - (this.lastOk ?? this.startedAt)) / 1000,
    );
    this.m = {
      rtt: mt.histogram("switchboard_canary_rtt_seconds", "Canary round trip: from A's send to A's dlv receipt, through the whole server."),
      ok: mt.counter("switchboard_canary_rounds_total", "Canary round trips, by result.", { result: "ok" }),
      failed: mt.counter("switchboard_canary_rounds_total", "Canary round trips, by result.", { result: "failed" }),
      crossOk: mt.counter("switchboard_canary_rounds_total", "Canary round trips, by result.", { result: "ok_cross_node" }),
    };
  }

  start(): void {
    this.startedAt = Date.now();
    for (const side of this.sides()) void this.dial(side);
    this.timer = setInterval(() => this.tick(), this.o.intervalMs);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer !== null) clearInterval(this.timer);
    for (const side of this.sides()) {
      const r = this.redials[side];
      if (r.timer !== null) clearTimeout(r.timer);
    }
    await Promise.all(Object.values(this.clients).map((c) => c?.close()));
  }

  private sides(): Side[] {
    return this.o.cross ? ["a", "b", "x"] : ["a", "b"];
  }

  /** For /readyz (SwitchboardServer.setReadinessProbe). */
  status(now = Date.now()): CanaryStatus {
    const local = this.localStatus(now);
    if (!this.o.cross) return local;
    const peers: NonNullable<CanaryStatus["canary"]["cross"]>["peers"] = {};
    const lagging: string[] = [];
    for (const { node } of this.o.cross.peers()) {
      const p = this.peers.get(node);
      const age = (t: number | null | undefined) => (t === null || t === undefined ? null : Math.round((now - t) / 100) / 10);
      peers[node] = { last_ok_age_s: age(p?.lastOk), outstanding_s: age(p?.pendingSince) };
      if (p?.pendingSince != null && now - p.pendingSince > this.o.thresholdMs) lagging.push(node);
    }
    local.canary.cross = { connected: this.clients.x?.isReady === true, peers, last_rtt_ms: this.crossRttMs, lagging };
    if (this.crossFailure !== null) local.canary.cross.error = this.crossFailure;
    if (local.ok && lagging.length > 0) return { ok: false, reason: "cross_node", canary: local.canary };
    return local;
  }

  private localStatus(now: number): CanaryStatus {
    const connected = this.clients.a?.isReady === true && this.clients.b?.isReady === true;
    const canary: CanaryStatus["canary"] = {
      last_ok_age_s: this.lastOk === null ? null : Math.round((now - this.lastOk) / 100) / 10,
      last_rtt_ms: this.lastRttMs,
      outstanding: this.rounds.size,
      connected,
    };
    if (this.lastOk !== null && now - this.lastOk <= this.o.thresholdMs) return { ok: true, canary };
    const failedLast = this.lastFailure !== null && (this.lastOk === null || this.lastFailure.at > this.lastOk);
    if (failedLast) canary.error = this.lastFailure!.error;
    if (this.lastOk === null && !failedLast && now - this.startedAt <= this.o.thresholdMs) return { ok: false, reason: "not_started", canary };
    if (failedLast) return { ok: false, reason: "failed", canary };
    if (!connected) return { ok: false, reason: "disconnected", canary };
    return { ok: false, reason: this.lastOk === null ? "not_started" : "lagging", canary };
  }

  /** The device of one side: its key file if the store still knows that key, else a new device. */
  private provision(side: Side): KeyFile {
    const account = side === "a" ? CANARY_SENDER : side === "b" ? CANARY_RECEIVER : this.o.cross!.account;
    const path = join(this.server.config.dataDir, "canary", `${side}.key`);
    const store = this.server.accounts;
    if (!store.accountExists(account)) {
      const r = store.createAccount(account, 60);
      if (!r.ok && store.accountExists(account) === false) throw new Error(`canary: cannot create account ${account}: ${r.message}`);
    }
    let kf: KeyFile | null = null;
    try {
      kf = existsSync(path) ? readKeyFile(path) : null;
    } catch (e) {
      log.warn("canary: unreadable key file; making a new device", { path, err: e as Error });
    }
    if (kf !== null && kf.account === account) {
      const d = store.device(account, kf.device);
      if (d !== null && d.revoked === null && Buffer.from(d.pk).toString("base64") === kf.pk) return kf;
    }
    // Start over: whatever devices the account has are not ours any more (their key is gone).
    for (const d of this.server.directory.deviceIds(account) ?? []) {
      if (this.server.directory.revoke(account, d).ok) this.server.hooks.run("device:revoked", account, d);
    }
    const key = generateDeviceKey();
    const r = this.server.directory.addDevice(account, key.publicKey, "canary");
    if (!r.ok) throw new Error(`canary: cannot add a device to ${account}: ${r.message}`);
    kf = keyToFile(key, account, r.value.device);
    writeKeyFile(path, kf);
    log.info("canary: new device", { account, device: r.value.device });
    return kf;
  }

  private async dial(side: Side): Promise<void> {
    if (this.stopping) return;
    let client: SwitchboardClient;
    try {
      const kf = this.provision(side);
      client = new SwitchboardClient({ ...this.o.connect, key: kf, userAgent: "switchboard-canary" });
    } catch (e) {
      this.failed(`provisioning: ${(e as Error).message}`);
      return this.redial(side, 1);
    }
    this.clients[side] = client;
    if (side === "b") {
      client.on("message", (m) => {
        const r = m.from === CANARY_SENDER ? this.rounds.get(m.id) : undefined;
        if (r !== undefined) (r.received = true), this.check(r);
      });
    }
    if (side !== "b") {
      // a: the local rounds' receipts; x: the cross-node rounds' (x also gets, and acks, other nodes' rounds).
      client.on("receipt", (rc) => {
        const r = rc.kind === "dlv" && rc.id !== undefined ? this.rounds.get(rc.id) : undefined;
        if (r !== undefined) (r.dlv = true), this.check(r);
      });
    }
    client.on("ready", () => {
      this.redials[side].attempt = 0;
      // B writes to A once, so that A is no stranger to B: the presence module allows presence.stranger_receipts
      // (10) dlv receipts a minute to a sender the recipient never wrote to, fewer than one round every
      // canary.interval (5 s) needs; before this, one round in six lost its receipt and with an interval of 1 s
      // /readyz stayed 503 after the first ten. (Cross-node devices write to each other as they take turns.)
      if (side === "b" && !this.introduced) {
        this.introduced = true;
        client.send(CANARY_SENDER, "canary introduction").catch((e: Error) => ((this.introduced = false), this.failed(`introduction: ${e.message}`)));
      }
      // The first round goes out as soon as the sender is in, so /readyz turns ready within a round trip of the start, not an interval.
      if (side === "a" && this.lastOk === null && this.rounds.size === 0) this.tick();
    });
    client.on("close", ({ reason, willReconnect }) => {
      if (willReconnect || this.stopping || this.clients[side] !== client) return;
      // The SDK gives up on replaced, revoked and auth_failed: so do we, for this client, and dial anew.
      this.failed(`device ${side} closed: ${reason}`);
      this.redial(side, reason === "replaced" ? (REPLACED_BACKOFF * this.o.thresholdMs) / this.o.intervalMs : 1);
    });
    try {
      await client.connect();
    } catch (e) {
      // Reported through the close event above; a connect() that fails for good lands there too.
      if (!(e instanceof ServerError)) this.failed(`device ${side}: ${(e as Error).message}`);
    }
  }

  /** Dials `side` again after `intervals` canary intervals, doubling with each attempt (capped at 5 minutes). */
  private redial(side: Side, intervals: number): void {
    const r = this.redials[side];
    if (this.stopping || r.timer !== null) return;
    const ms = Math.min(300_000, this.o.intervalMs * Math.max(1, intervals) * 2 ** Math.min(r.attempt, 8));
    r.attempt++;
    r.timer = setTimeout(() => {
      r.timer = null;
      void this.dial(side);
    }, ms);
  }

  private tick(): void {
    if (this.stopping) return;
    this.crossTick();
    // Only the sender must be connected: a message to a recipient that is not waits in its queue, and the
    // round trip completes when it comes back, which is the store-and-forward path working.
    const a = this.clients.a;
    if (!a?.isReady) return;
    if (this.rounds.size >= MAX_OUTSTANDING) return;
    const id = `canary-${newMessageId()}`;
    const r: Round = { id, peer: null, started: Date.now(), t0: performance.now(), sent: false, received: false, dlv: false };
    this.rounds.set(id, r);
    a.send(CANARY_RECEIVER, `canary ${r.started}`, { id }).then(
      () => ((r.sent = true), this.check(r)),
      (e: Error) => {
        if (!this.rounds.delete(id)) return;
        this.m.failed.inc();
        this.failed(e instanceof ServerError ? e.code : e.message);
      },
    );
  }

  /** One cross-node round to the next node up, in turn; nodes no longer up are forgotten (counted afresh when back). */
  private crossTick(): void {
    const x = this.clients.x;
    if (!this.o.cross) return;
    const up = this.o.cross.peers();
    const names = new Set(up.map((p) => p.node));
    for (const n of this.peers.keys()) if (!names.has(n)) this.peers.delete(n);
    if (!x?.isReady || up.length === 0) return;
    let outstanding = 0;
    for (const r of this.rounds.values()) if (r.peer !== null) outstanding++;
    if (outstanding >= MAX_OUTSTANDING) return;
    const to = up[this.crossNext++ % up.length]!;
    let p = this.peers.get(to.node);
    if (p === undefined) this.peers.set(to.node, (p = { lastOk: null, pendingSince: null }));
    p.pendingSince ??= Date.now();
    const id = `canary-${newMessageId()}`;
    const r: Round = { id, peer: to.node, started: Date.now(), t0: performance.now(), sent: false, received: true, dlv: false };
    this.rounds.set(id, r);
    x.send(to.account, `canary ${r.started}`, { id }).then(
      () => ((r.sent = true), this.check(r)),
      (e: Error) => {
        if (!this.rounds.delete(id)) return;
        this.m.failed.inc();
        this.crossFailure = `to node ${to.node}: ${e instanceof ServerError ? e.code : e.message}`;
        if (!this.stopping) log.warn("canary: cross-node round trip failed", { error: this.crossFailure });
      },
    );
  }

  private check(r: Round): void {
    if (!(r.sent && r.received && r.dlv) || !this.rounds.delete(r.id)) return;
    const ms = performance.now() - r.t0;
    if (r.peer !== null) {
      // Cross-node: its own state; the local round alone says whether this node's own path works.
      const p = this.peers.get(r.peer);
      if (p !== undefined) (p.lastOk = Date.now()), (p.pendingSince = null);
      this.crossRttMs = Math.round(ms * 10) / 10;
      this.crossFailure = null;
      this.m.crossOk.inc();
      return;
    }
    this.lastOk = Date.now();
    this.lastRttMs = Math.round(ms * 10) / 10;
    this.m.rtt.record(ms * 1000);
    this.m.ok.inc();
  }

  private failed(error: string): void {
    if (this.stopping) return;
    this.lastFailure = { at: Date.now(), error };
    log.warn("canary: round trip failed", { error });
  }
}

/**
 * Starts the canary of a listening server when `canary.interval` > 0 and
 * registers it as the server's readiness probe. Plain TCP when there is a
 * TCP listener, else TLS without certificate checks (it is our own socket on
 * loopback). Returns null when the canary is off.
 */
export function startCanary(server: SwitchboardServer, where: { tcp: number | null; tls: number | null }): Canary | null {
  const c = server.config;
  if (c.canary.interval === 0 || (where.tcp === null && where.tls === null)) return null;
  const connect: ConnectOptions =
    where.tcp !== null
      ? { host: loopbackHost(c.tcp.host), port: where.tcp }
      : { host: loopbackHost(c.tls.host), port: where.tls!, tls: { rejectUnauthorized: false, serverName: "localhost" } };
  const node = server.cluster;
  const cross = node === null ? undefined : {
    account: crossCanaryAccount(node.nodeId),
    peers: () => node.peersUp().map((n) => ({ node: n, account: crossCanaryAccount(n) })),
  };
  const canary = new Canary(server, { connect, intervalMs: c.canary.interval * 1000, thresholdMs: c.canary.threshold * 1000, cross });
  server.setReadinessProbe(() => canary.status());
  canary.start();
  return canary;
}

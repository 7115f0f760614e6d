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

export const CANARY_SENDER = `${INTERNAL_ACCOUNT_PREFIX}canary-a`;
export const CANARY_RECEIVER = `${INTERNAL_ACCOUNT_PREFIX}canary-b`;

/** Rounds in flight at most; when delivery is stuck, the canary stops adding to the backlog. */
const MAX_OUTSTANDING = 8;
/** A redial after `replaced` (someone else logged in with the canary's key) waits this many thresholds, doubling. */
const REPLACED_BACKOFF = 2;

interface Round {
  id: string;
  started: number;
  t0: number;
  sent: boolean;
  received: boolean;
  dlv: boolean;
}

type Side = "a" | "b";

export interface CanaryOptions {
  /** Where the server listens (the canary's own end of the loopback). */
  connect: ConnectOptions;
  intervalMs: number;
  thresholdMs: number;
}

/** A type, not an interface: it must fit ReadinessProbe's index signature. */
export type CanaryStatus = {
  ok: boolean;
  reason?: "not_started" | "failed" | "lagging" | "disconnected";
  canary: {
    /** Seconds since the last complete round trip (null: none yet). */
    last_ok_age_s: number | null;
    last_rtt_ms: number | null;
    outstanding: number;
    connected: boolean;
    error?: string;
  };
};

/** Where a loopback client reaches a listener bound to `host`. */
export function loopbackHost(host: string): string {
  if (host === "" || host === "0.0.0.0" || host === "localhost") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "::1";
  return host;
}

export class Canary {
  private clients: Record<Side, SwitchboardClient | null> = { a: null, b: null };
  private redials: Record<Side, { attempt: number; timer: ReturnType<typeof setTimeout> | null }> = {
    a: { attempt: 0, timer: null },
    b: { attempt: 0, timer: null },
  };
  private rounds = new Map<string, Round>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private stopping = false;
  private startedAt = Date.now();
  private lastOk: number | null = null;
  private lastRttMs: number | null = null;
  private lastFailure: { at: number; error: string } | null = null;
  private m: { rtt: Histogram; ok: Counter; failed: Counter };

  constructor(private server: SwitchboardServer, private o: CanaryOptions) {
    const mt = server.metrics;
    mt.gauge("switchboard_canary_age_seconds", "Seconds since the last complete canary round trip (since the canary started, before the first).", () =>
      (Date.now() - (this.lastOk ?? this.startedAt)) / 1000,
    );
    this.m = {
      rtt: mt.histogram("switchboard_canary_rtt_seconds", "Canary round trip: from A's send to A's dlv receipt, through the whole server."),
      ok: mt.counter("switchboard_canary_rounds_total", "Canary round trips, by result.", { result: "ok" }),
      failed: mt.counter("switchboard_canary_rounds_total", "Canary round trips, by result.", { result: "failed" }),
    };
  }

  start(): void {
    this.startedAt = Date.now();
    for (const side of ["a", "b"] as const) void this.dial(side);
    this.timer = setInterval(() => this.tick(), this.o.intervalMs);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer !== null) clearInterval(this.timer);
    for (const side of ["a", "b"] as const) {
      const r = this.redials[side];
      if (r.timer !== null) clearTimeout(r.timer);
    }
    await Promise.all(Object.values(this.clients).map((c) => c?.close()));
  }

  /** For /readyz (SwitchboardServer.setReadinessProbe). */
  status(now = Date.now()): CanaryStatus {
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
    const account = side === "a" ? CANARY_SENDER : CANARY_RECEIVER;
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
    } else {
      client.on("receipt", (rc) => {
        const r = rc.kind === "dlv" && rc.id !== undefined ? this.rounds.get(rc.id) : undefined;
        if (r !== undefined) (r.dlv = true), this.check(r);
      });
    }
    client.on("ready", () => {
      this.redials[side].attempt = 0;
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
    // Only the sender must be connected: a message to a recipient that is not waits in its queue, and the
    // round trip completes when it comes back, which is the store-and-forward path working.
    const a = this.clients.a;
    if (!a?.isReady) return;
    if (this.rounds.size >= MAX_OUTSTANDING) return;
    const id = `canary-${newMessageId()}`;
    const r: Round = { id, started: Date.now(), t0: performance.now(), sent: false, received: false, dlv: false };
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

  private check(r: Round): void {
    if (!(r.sent && r.received && r.dlv) || !this.rounds.delete(r.id)) return;
    const ms = performance.now() - r.t0;
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
  const canary = new Canary(server, { connect, intervalMs: c.canary.interval * 1000, thresholdMs: c.canary.threshold * 1000 });
  server.setReadinessProbe(() => canary.status());
  canary.start();
  return canary;
}

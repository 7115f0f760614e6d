/**
 * Assembles a server and runs its lifecycle: stores, registry, delivery,
 * sessions, the modules it is given, the TCP and TLS listeners (connections
 * are the transport's, src/transport/listener.ts; what their stanzas do is
 * src/core/dispatch.ts), the HTTP endpoint (src/core/http.ts), the sweep and
 * retention timers, and shutdown. One object per process; tests start several
 * side by side on ephemeral ports.
 */
import type { Server, TCPSocketListener } from "bun";
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import type { Config } from "./config.ts";
import type { ServerContext } from "./context.ts";
import { Delivery } from "./delivery.ts";
import { Directory } from "./directory.ts";
import { Hooks } from "./hooks.ts";
import { log, setLogLevel } from "./log.ts";
import { EventLoopMonitor, Metrics, type Counter } from "./metrics.ts";
import { Dispatch } from "./dispatch.ts";
import { HttpEndpoint, type ReadinessProbe } from "./http.ts";
import { WebApp } from "./webapp.ts";
import { Admission, connectionCapFromFdLimit, KeyedTokenBuckets } from "./ratelimit.ts";
import { Trace } from "./trace.ts";
import type { Module } from "./module.ts";
import { ModuleLoader, type LoadedModule, type ReloadReport } from "./loader.ts";
import { Registry } from "./registry.ts";
import { SeqAllocator } from "./seq.ts";
import { isInternalAccount, Sessions } from "./session.ts";
import { CLOSE_REASONS, CloseReason } from "../protocol/errors.ts";
import { SqliteAccountStore, type AccountStore } from "../store/accounts.ts";
import { SqliteSeqStore } from "../store/seqs.ts";
import { SqliteDeliveryQueue } from "../store/queue-sqlite.ts";
import { migrate, openVersioned, type Migration } from "../store/schema.ts";
import { lockDataDir, type DirLock } from "../store/lock.ts";
import type { StorageAlarm } from "../store/errors.ts";
import { storageAlarm } from "./storage-alarm.ts";
import { MediaService } from "./media/service.ts";
import { Admin } from "./admin.ts";
import { Accept } from "./accept.ts";
import { PeerFacts } from "./facts.ts";
import { Conn, ConnState, flushAll, type Transport } from "../transport/connection.ts";
import { Connections } from "../transport/listener.ts";
import { serverCertificate, tlsTuning } from "../transport/devcert.ts";
import { listenWs, parseOrigins, wsHandler, wsUpgrade, wsUrlOf, type WsSocket } from "../transport/ws.ts";
import { ClusterNode, peerView } from "./cluster/node.ts";
import { PushService } from "./push/service.ts";
import { providersFrom } from "./push/providers.ts";
import { SqlitePushJobs } from "../store/push-sqlite.ts";

export type { ReadinessProbe } from "./http.ts";

export interface Listening {
  tcp: number | null;
  tls: number | null;
  /** The WebSocket port (ws.port), null when disabled. */
  ws: number | null;
  /** The WebSocket-over-TLS port (ws.tls_port), null when disabled. */
  wss: number | null;
  http: number | null;
  /** The HTTPS twin of the HTTP port (http.tls_port), null when disabled. */
  https: number | null;
}

/** How long a drained node keeps its listeners for the redirects of the devices it closed (move.ts). */
const DRAIN_REDIRECT_GRACE_MS = 2000;

export class SwitchboardServer {
  readonly metrics: Metrics;
  /** Event-loop lag and RSS, sampled by a timer: a metric and an admission input. */
  readonly loop: EventLoopMonitor;
  readonly trace: Trace;
  private admission: Admission;
  /** Per-account send rate (limits.send_rate), or null when unlimited. */
  private sendLimit: KeyedTokenBuckets | null;
  /** limits.max_connections, resolved (0 = from the open-file limit). */
  readonly maxConnections: number;
  private internalSessions = 0;
  private readiness: ReadinessProbe | null = null;
  private listening = false;
  /** SIGTERM came: /readyz answers 503 from here, while stop() may still serve for shutdown.drain_delay. */
  private draining = false;
  readonly hooks = new Hooks();
  readonly registry = new Registry<Conn>(64);
  readonly accounts: AccountStore;
  readonly queue: SqliteDeliveryQueue;
  /** Push notifications (src/core/push/service.ts): jobs ride on the queue's commits; the push module supplies the rules. */
  readonly push: PushService;
  readonly directory: Directory;
  /** Store files that cannot commit (disk full, I/O error): sends are refused and /readyz is 503 meanwhile. */
  readonly storage: StorageAlarm;
  /** Attachments (src/core/media/): media.upload, /media on the HTTP port, the media sweep. */
  readonly media: MediaService;
  readonly delivery: Delivery;
  readonly seqs: SeqAllocator;
  readonly sessions: Sessions;
  readonly ctx: ServerContext;
  /** Handler modules: started, reloaded and stopped here (src/core/loader.ts). */
  private readonly modules: ModuleLoader;
  private sharedState = new Map<string, object>();
  private tcp: TCPSocketListener<Conn> | null = null;
  private tls: TCPSocketListener<Conn> | null = null;
  private readonly http: HttpEndpoint;
  private httpPort: number | null = null;
  private httpsPort: number | null = null;
  /** The WebSocket listener (src/transport/ws.ts), when ws.port is set. */
  private ws: Server<WsSocket> | null = null;
  /** Its TLS twin (wss://, ws.tls_port): the same handler, the certificate of tls.*. */
  private wss: Server<WsSocket> | null = null;
  /** Every connection, end to end (src/transport/listener.ts). */
  private readonly conns: Connections;
  private readonly dispatch: Dispatch;
  private sweepTimer: ReturnType<typeof setInterval> | null = null;
  private expireTimer: ReturnType<typeof setInterval> | null = null;
  private stopped = false;
  private dirLock: DirLock;
  /** Cluster membership (cluster.redis set), started by listen(); null on a single node. */
  cluster: ClusterNode | null = null;
  /** Module databases (ctx.database), by name. */
  private databases = new Map<string, Database>();
  private m: {
    framesIn: Counter; bytesIn: Counter; framesOut: Counter; bytesOut: Counter; errors: Counter; expired: Counter;
    opened: Record<Transport, Counter>; closes: Record<string, Counter>;
    refusedConns: Counter; refusedSends: Counter; held: Counter; paused: Counter; resumed: Counter; tlsHandshakes: { full: Counter; resumed: Counter };
  };

  constructor(readonly config: Config) {
    setLogLevel(config.log.level);
    this.metrics = new Metrics({ enabled: config.metrics.enabled });
    mkdirSync(config.dataDir, { recursive: true });
    const lock = lockDataDir(config.dataDir); // before any store opens: a second server must not touch the files
    if (!lock.ok) throw new Error(lock.message);
    this.dirLock = lock.lock;
    const accounts = new SqliteAccountStore(config.dataDir, config.queue.durability);
    this.accounts = accounts;
    this.storage = storageAlarm(this.metrics);
    const queue = (this.queue = new SqliteDeliveryQueue(config.dataDir, config.queue, this.metrics, this.storage));
    queue.offloadCheckpoints(accounts.db, join(config.dataDir, "accounts.db")); // seq blocks, devices, tickets
    this.directory = new Directory(this.accounts, config.limits.maxDevices);
    this.seqs = new SeqAllocator(new SqliteSeqStore(accounts.db)); // accounts.db's seqs table: src/store/seqs.ts
    const mt = this.metrics;
    const tlsCounter = (resumed: string) => mt.counter("switchboard_tls_handshakes_total", "TLS handshakes, by whether they resumed the session of the client's previous connection.", { resumed });
    this.m = {
      framesIn: mt.counter("switchboard_frames_in_total", "Frames received."),
      bytesIn: mt.counter("switchboard_bytes_in_total", "Bytes received."),
      framesOut: mt.counter("switchboard_frames_out_total", "Frames queued for sending."),
      bytesOut: mt.counter("switchboard_bytes_out_total", "Bytes written to sockets."),
      errors: mt.counter("switchboard_protocol_errors_total", "Invalid frames received."),
      expired: mt.counter("switchboard_queue_expired_total", "Queue items deleted unread by retention."),
      opened: {
        tcp: mt.counter("switchboard_connections_opened_total", "Connections accepted.", { transport: "tcp" }),
        tls: mt.counter("switchboard_connections_opened_total", "Connections accepted.", { transport: "tls" }),
        ws: mt.counter("switchboard_connections_opened_total", "Connections accepted.", { transport: "ws" }),
      },
      tlsHandshakes: { full: tlsCounter("false"), resumed: tlsCounter("true") },
      closes: Object.fromEntries(CLOSE_REASONS.map((r) => [r, mt.counter("switchboard_closes_total", "Connections closed, by reason.", { reason: r })])),
      refusedConns: mt.counter("switchboard_admission_refused_total", "Connections, logins and sends turned away by admission control, by reason.", { reason: "connections" }),
      refusedSends: mt.counter("switchboard_admission_refused_total", "Connections, logins and sends turned away by admission control, by reason.", { reason: "send_rate" }),
      held: mt.counter("switchboard_inbound_held_total", "Stanzas read and left for a later event-loop turn (inbound pacing; src/transport/listener.ts): per message, how much of the load waits in backlogs."),
      paused: mt.counter("switchboard_inbound_paused_total", "Times a connection stopped being read because too many of its stanzas waited (TCP backpressure; src/transport/listener.ts)."),
      resumed: mt.counter("switchboard_inbound_resumed_total", "Times a paused connection was read again: its waiting stanzas fell to half (src/transport/listener.ts)."),
    };
    this.maxConnections = config.limits.maxConnections || connectionCapFromFdLimit();
    this.loop = new EventLoopMonitor(mt.histogram("switchboard_event_loop_lag_samples_seconds", "Event-loop lag: how late a 100 ms timer fired, per sample."));
    const a = config.admission;
    this.admission = new Admission(
      { loginRate: a.loginRate, loginBurst: a.loginBurst, maxLagMs: a.maxLagMs, maxRss: a.maxRssMb * 1024 * 1024, retryAfterMs: a.retryAfterMs },
      this.loop,
    );
    this.sendLimit = config.limits.sendRate > 0 ? new KeyedTokenBuckets(config.limits.sendRate, config.limits.sendBurst) : null;
    this.trace = new Trace(config.trace.size, config.trace.sample);
    this.conns = new Connections(
      // turnMs: a quarter of the commit window, so pushed items are acked before their commit (listener.ts, TURN_MIN).
      { maxFrame: config.limits.maxFrame, outboundLimit: config.limits.outboundBytes, errorBudget: config.limits.errorBudget, turnMs: config.queue.commitMs / 4 },
      {
        opened: (conn) => this.opened(conn),
        stanza: (conn, s) => this.dispatch.stanza(conn, s),
        drained: (conn) => {
          // Deliveries held back because the socket was full (Conn.hasRoomFor) go out now.
          if (conn.behind && conn.state === ConnState.READY) {
            this.delivery.refill(conn);
            flushAll();
          }
        },
        closed: (conn, reason) => this.onClosed(conn, reason),
      },
      this.m,
    );
    this.runtimeGauges();
    for (const t of ["tcp", "tls", "ws"] as const) mt.gauge("switchboard_connections", "Open connections.", () => this.conns.count(t), { transport: t });
    mt.gauge("switchboard_sessions", "Authenticated sessions in the registry (the canary's own two left out).", () => this.registry.size - this.internalSessions);
    mt.gauge("switchboard_unsent_bytes_max", "Largest unsent output of one connection.", () => this.conns.unsent().max);
    mt.gauge("switchboard_unsent_bytes_total", "Unsent output of all connections.", () => this.conns.unsent().total);
    mt.gauge("switchboard_inbound_held", "Stanzas read and waiting for a later event-loop turn (inbound pacing).", () => this.conns.held());
    mt.gauge("switchboard_inbound_turn_budget", "Stanzas an event-loop turn may handle now (inbound pacing, TURN_MIN..TURN_MAX).", () => this.conns.turnBudget());
    mt.gauge("switchboard_process_resident_bytes", "Resident set size.", () => process.memoryUsage.rss());
    const stats = {
      pushed: mt.counter("switchboard_deliveries_pushed_total", "Queue items written to a device's connection."),
      acked: mt.counter("switchboard_deliveries_acked_total", "Queue items acknowledged by their device."),
    };
    this.delivery = new Delivery(
      this.queue, this.registry, config.limits.window, stats, (item, conn) => {
        // A group copy's receipt and mark are made where its group lives (forward.ts `h`).
        if (this.cluster === null || !this.cluster.forward.groupHook("delivery:acked", item)) this.hooks.run("delivery:acked", item, conn);
      },
      this.trace.enabled ? this.trace : null,
    );
    const pushJobs = new SqlitePushJobs(config.queue.shards);
    queue.ride(pushJobs);
    const p = config.push;
    this.push = new PushService(pushJobs, this.registry, queue, this.metrics, {
      providers: providersFrom(p), concurrency: p.concurrency, timeoutMs: p.timeoutMs, tickMs: p.tickMs, batch: p.batch, allowInsecure: p.webpush.allowInsecure, retentionMs: config.queue.retention * 1000,
      limits: { silentIntervalMs: p.silentInterval * 1000, alertRate: 1 / p.alertInterval, alertBurst: p.alertBurst },
    });
    const self = this;
    this.ctx = {
      push: this.push, config, accounts: this.accounts, directory: this.directory, registry: this.registry, delivery: this.delivery,
      accept: new Accept(this.delivery, this.queue, this.directory, this.registry, this.trace),
      // Cluster mode caches no peer facts (src/core/facts.ts): a home moving would need its own bump.
      facts: Object.assign(new PeerFacts(this.directory, this.hooks), { cluster: !!config.cluster.redis }),
      seqs: this.seqs, metrics: this.metrics, hooks: this.hooks, log, trace: this.trace, storage: this.storage,
      sendError(conn, code, message, id, detail) {
        conn.sendError(code, message, id, detail);
      },
      database(name: string, schema: readonly Migration[]): Database {
        if (!/^[a-z][a-z0-9_-]*$/.test(name) || name === "accounts" || name === "lock") {
          throw new Error(`ctx.database: ${JSON.stringify(name)} is not a module's file name; use lower-case letters, digits, - and _ (not accounts or lock, core's files)`);
        }
        let db = self.databases.get(name);
        const path = join(config.dataDir, `${name}.db`);
        if (db === undefined) {
          self.databases.set(name, (db = openVersioned(path, config.queue.durability, schema)));
          queue.offloadCheckpoints(db, path);
        }
        else migrate(db, path, schema); // a reloaded module may bring new steps
        return db;
      },
      shared<T extends object>(name: string, init: () => T): T {
        let s = self.sharedState.get(name) as T | undefined;
        if (!s) self.sharedState.set(name, (s = init()));
        return s;
      },
      // Read at each call: modules start before listen() makes the cluster node.
      peers: peerView(() => self.cluster),
    };
    this.modules = new ModuleLoader(this.ctx, this.hooks, this.metrics);
    this.sessions = new Sessions(
      this.ctx,
      (conn) => {
        if (!conn.rx) return; // a non-receiving session: no deliveries, no presence (§4.6)
        if (isInternalAccount(conn.account)) this.internalSessions++;
        this.hooks.run("session:ready", conn);
        this.delivery.start(conn);
      },
      this.admission,
    );
    this.hooks.add({ name: "core", version: "1", start: () => [] }, Dispatch.coreRegistrations(this.sessions));
    this.media = new MediaService({ config, metrics: mt, deviceActive: (a, d) => this.directory.deviceIds(a)?.includes(d) ?? false, httpPort: () => this.httpPort, httpsPort: () => this.httpsPort, checkpoints: (db, path) => queue.offloadCheckpoints(db, path) });
    this.hooks.add({ name: "media", version: "1", start: () => [] }, this.media.registrations());
    this.dispatch = new Dispatch(config, this.sessions, this.delivery, this.hooks, (c, code, m, id) => this.conns.reject(c, code, m, id), this.sendLimit, this.m.refusedSends, this.storage, this.ctx.accept);
    this.http = new HttpEndpoint({
      metrics: this.metrics,
      trace: this.trace,
      reload: () => this.reloadModules(),
      notReady: () => (this.draining || this.stopped ? "draining" : this.listening ? null : "not_started"),
      readiness: () => this.readiness,
      cluster: () => this.cluster?.status() ?? null,
      clusterMove: (shard, to) => this.cluster?.mover.moveOne(shard, to) ?? null, clusterRebalance: () => this.cluster?.mover.rebalance() ?? null,
      storage: this.storage,
      media: this.media,
      ...(config.http.app ? { app: new WebApp(config.ws.httpPath, config.media.publicUrl) } : {}),
      ...(config.ws.httpPath
        ? { ws: { path: config.ws.httpPath, handler: wsHandler(this.conns, config.limits.maxFrame, config.timeouts.idle * 2), upgrade: wsUpgrade(parseOrigins(config.ws.origins)) } }
        : {}),
      admin: new Admin({
        config, accounts: this.accounts, directory: this.directory, registry: this.registry, delivery: this.delivery, hooks: this.hooks,
        queue: this.queue, storage: this.storage,
        commitLatency: mt.histogram("switchboard_queue_commit_seconds", "Duration of one group commit."),
        connections: (t) => this.conns.count(t),
        sessions: () => this.registry.size - this.internalSessions,
        modules: () => this.loadedModules(), readiness: () => this.readiness,
        cluster: () => this.cluster?.status() ?? null, home: (a) => this.cluster?.home(a) ?? null,
      }),
    });
  }

  /** A new connection: shut down or over the connection cap, it costs one close frame and nothing else (§4.9). */
  private opened(conn: Conn): void {
    if (this.stopped) conn.close(CloseReason.SERVER_SHUTDOWN, undefined, 1000);
    else if (this.conns.all.size > this.maxConnections) {
      this.m.refusedConns.inc();
      conn.close(CloseReason.TRY_AGAIN, "too many connections", this.admission.retryAfter(0));
    }
  }

  /**
   * Gauges read at scrape time: queue depth and age per shard (one stat
   * call per scrape, shared by the shard's two gauges), the write-back hit
   * ratio, event-loop lag, the connection cap.
   */
  private runtimeGauges(): void {
    const mt = this.metrics;
    let cache: { scrape: number; stats: ReturnType<SqliteDeliveryQueue["shardStats"]> } | null = null;
    const stats = () => {
      if (cache === null || cache.scrape !== mt.scrapes) cache = { scrape: mt.scrapes, stats: this.queue.shardStats() };
      return cache.stats;
    };
    const shards = this.queue.shardStats().length;
    for (let i = 0; i < shards; i++) {
      const shard = String(i);
      mt.gauge("switchboard_queue_depth", "Items queued (not yet acknowledged), per queue shard.", () => stats()[i]?.depth ?? 0, { shard });
      mt.gauge("switchboard_queue_oldest_age_seconds", "Age of the oldest queued item, per queue shard (0 when empty).", () => {
        const ts = stats()[i]?.oldestTs;
        return ts == null ? 0 : Math.max(0, (Date.now() - ts) / 1000);
      }, { shard });
    }
    // The counters live in the queue; metrics.counter() hands back the same objects.
    const hits = mt.counter("switchboard_queue_write_back_hits_total", "Queue items acknowledged before their commit, so never written.");
    const written = mt.counter("switchboard_queue_rows_written_total", "Queue rows written to disk.");
    mt.gauge("switchboard_queue_write_back_hit_ratio", "Share of queue items acknowledged before their commit, since start (hits / (hits + rows written)); for a recent ratio use rate() of the two counters.", () =>
      hits.value + written.value === 0 ? 0 : hits.value / (hits.value + written.value),
    );
    mt.gauge("switchboard_event_loop_lag_seconds", "Event-loop lag: the largest lateness of a 100 ms timer over the last second.", () => this.loop.recentMs / 1000);
    mt.gauge("switchboard_connections_max", "The connection cap (limits.max_connections, resolved).", () => (Number.isFinite(this.maxConnections) ? this.maxConnections : -1));
  }

  /** The end-to-end check /readyz consults (the canary); without one, ready means listening and not draining. */
  setReadinessProbe(probe: ReadinessProbe | null): void {
    this.readiness = probe;
  }

  /** Starts a module the caller imported (built in): its registrations go into the dispatch tables. It is never reloaded. */
  load(mod: Module): void {
    this.modules.add(mod);
  }

  /** Loads every module of a modules dir (one folder each), `order` first; they can be reloaded from there. Throws on any failure. */
  loadModulesFrom(dir: string, order: readonly string[] = []): Promise<void> {
    return this.modules.loadDir(dir, order);
  }

  /** Re-imports the modules whose files changed (SIGHUP, POST /admin/reload); a module that fails keeps its running version. */
  reloadModules(): Promise<ReloadReport> {
    return this.modules.reload();
  }

  loadedModules(): LoadedModule[] {
    return this.modules.list();
  }

  async listen(): Promise<Listening> {
    const c = this.config;
    // A failed listener names itself (which setting, which address), and the ones already open are closed again.
    const bind = <T>(setting: string, host: string, port: number, open: () => T): T => {
      try {
        return open();
      } catch (e) {
        for (const l of [this.tcp, this.tls, this.ws, this.wss]) l?.stop(true);
        void this.http.stop(); // http.port, when the HTTPS twin is the one that failed
        const code = (e as { code?: string }).code;
        throw new Error(`${setting} ${port} on ${host}: ${code === "EADDRINUSE" ? "the port is in use" : code === "EACCES" ? "permission denied" : (e as Error).message}`);
      }
    };
    if (c.tcp.port >= 0) {
      this.tcp = bind("tcp.port", c.tcp.host, c.tcp.port, () => Bun.listen<Conn>({ hostname: c.tcp.host, port: c.tcp.port, socket: this.conns.handlers("tcp") }));
    }
    // One certificate for the TLS port, the wss port and the HTTPS port, read (or made) once.
    const pem = c.tls.port >= 0 || c.ws.tlsPort >= 0 || c.http.tlsPort >= 0 ? await serverCertificate(c.tls, c.dataDir, (cert) => log.warn("generated a development TLS certificate; set tls.cert and tls.key for production", { cert })) : null;
    if (c.tls.port >= 0) {
      const { key, cert } = pem!;
      this.tls = bind("tls.port", c.tls.host, c.tls.port, () => Bun.listen<Conn>({ hostname: c.tls.host, port: c.tls.port, tls: { key, cert, ...tlsTuning(c.tls) }, socket: this.conns.handlers("tls") }));
    }
    const wsOn = (port: number, tls?: { key: string; cert: string }) => () => listenWs(this.conns, { host: c.ws.host, port, maxFrame: c.limits.maxFrame, idleTimeout: c.timeouts.idle * 2, origins: parseOrigins(c.ws.origins), tls });
    if (c.ws.port >= 0) this.ws = bind("ws.port", c.ws.host, c.ws.port, wsOn(c.ws.port));
    if (c.ws.tlsPort >= 0) this.wss = bind("ws.tls_port", c.ws.host, c.ws.tlsPort, wsOn(c.ws.tlsPort, pem!));
    if (c.http.port >= 0) this.httpPort = bind("http.port", c.http.host, c.http.port, () => this.http.listen(c.http.host, c.http.port));
    if (c.http.tlsPort >= 0) this.httpsPort = bind("http.tls_port", c.http.host, c.http.tlsPort, () => this.http.listen(c.http.host, c.http.tlsPort, pem!));
    if (c.cluster.redis) {
      // After the listeners: the advertised default is the TCP port actually bound.
      if (!this.tcp && !c.cluster.advertise) throw new Error("cluster.advertise: set it, or enable tcp.port: redirected clients need an address to reach this node");
      const advertise = c.cluster.advertise || `${c.tcp.host}:${this.tcp!.port}`;
      this.cluster = new ClusterNode(c, advertise, this.metrics, c.cluster.advertiseWs || wsUrlOf(advertise.slice(0, advertise.lastIndexOf(":")), { ws: this.ws?.port, wss: this.wss?.port, https: this.httpsPort, http: this.httpPort, path: c.ws.httpPath }));
      this.dispatch.cluster = this.cluster;
      const cluster = this.cluster;
      this.queue.setCommitGuard((account) => cluster.writable(account), () => cluster.forward.beforeCommit());
      for (const [db, name] of [[cluster.fence.db, "cluster.db"], [cluster.forward.outboxDb, "outbox.db"]] as const) if (db) this.queue.offloadCheckpoints(db, join(c.dataDir, name));
      cluster.attach({
        queue: this.queue, accounts: this.accounts, delivery: this.delivery, accept: this.ctx.accept, directory: this.directory, registry: this.registry, hooks: this.hooks, seqs: this.seqs, push: this.push,
        dispatch: (conn, s) => this.dispatch.stanza(conn, s),
      }); // copies and group operations forwarded from peers
      await this.cluster.start(); // waits for Redis: cluster.nodes is checked against the cluster's list first (members.ts)
    }
    this.sweepTimer = setInterval(() => this.sweep(), c.timeouts.sweep * 1000);
    this.expireTimer = setInterval(() => this.expire(), c.queue.expireEvery * 1000);
    this.expire(); // what expired while the server was down
    this.push.start();
    this.media.start();
    this.loop.start();
    this.listening = true;
    const where = { tcp: this.tcp?.port ?? null, tls: this.tls?.port ?? null, ws: this.ws?.port ?? null, wss: this.wss?.port ?? null, http: this.httpPort, https: this.httpsPort };
    log.info("listening", { ...where, dataDir: c.dataDir, serverId: this.accounts.serverId() });
    return where;
  }

  private onClosed(conn: Conn, reason: CloseReason): void {
    const internal = conn.device !== 0 && isInternalAccount(conn.account);
    if (!internal) this.m.closes[reason]?.inc();
    this.sessions.closed(conn);
    if (conn.device !== 0 && this.registry.remove(conn) && conn.rx) {
      if (internal) this.internalSessions--;
      this.hooks.run("session:closed", conn, reason);
    }
    if (log.enabled("debug")) log.debug("closed", { reason, account: conn.account, device: conn.device, remote: conn.remote });
  }

  /** Coarse timers: idle and unauthenticated connections, link expiry. Bun's socket.timeout() only notifies, every ~4 s. */
  private sweep(): void {
    const now = Date.now();
    const idleMs = this.config.timeouts.idle * 1000;
    const authMs = this.config.timeouts.auth * 1000;
    for (const conn of this.conns.all) {
      if (conn.state === ConnState.READY || conn.state === ConnState.LINKING) {
        if (now - conn.lastSeen > idleMs) conn.close(CloseReason.IDLE_TIMEOUT, `silent for more than ${this.config.timeouts.idle} s`); else conn.release(); // no Outbound kept while idle
      } else if (conn.state !== ConnState.CLOSED && now - conn.openedAt > authMs) {
        conn.close(CloseReason.AUTH_TIMEOUT, `not authenticated within ${this.config.timeouts.auth} s`);
      }
    }
    this.sessions.sweep(now);
    this.sendLimit?.sweep(now);
    flushAll();
  }

  /** Retention: items older than queue.retention seconds expire, loudly (gap notices, `exp` receipts). */
  expire(now = Date.now()): number {
    const expired = this.delivery.expire(now - this.config.queue.retention * 1000, now - this.config.queue.dedupTtl * 1000);
    for (const it of expired) if (this.cluster === null || !this.cluster.forward.groupHook("delivery:expired", it)) this.hooks.run("delivery:expired", it);
    if (expired.length) log.info("expired queued items", { count: expired.length });
    this.m.expired.inc(expired.length);
    flushAll();
    return expired.length;
  }

  /** Stops accepting, tells clients to come back later, commits the queues, closes the stores. */
  async stop(opts: { graceMs?: number; drainCluster?: boolean } = {}): Promise<void> {
    if (this.draining || this.stopped) return;
    this.draining = true; // from here /readyz answers 503 "draining"
    // 0. Optionally keep serving a while, so a load balancer sees the 503 and stops sending new clients first.
    const delay = Math.min(this.config.shutdown.drainDelay, this.config.shutdown.timeout / 2) * 1000;
    if (delay > 0) await Bun.sleep(delay);
    // 0b. Clustered: every shard held here moves to the live nodes first (its devices are redirected there), so
    //     none of its accounts waits for this node's restart; within half of shutdown.timeout (the rest stays).
    if (this.cluster !== null && opts.drainCluster !== false) {
      const budget = (this.config.shutdown.timeout * 1000) / 2 - delay;
      const t0 = performance.now();
      const r = await this.cluster.mover.drain(budget);
      log.info("cluster drain", { node: this.cluster.nodeId, moved: r.moved, left: r.left, ms: Math.round(performance.now() - t0) });
      // The moved shards' devices were closed with try_again (retry_ms 250–500): the listeners stay a little longer,
      // so that they come back here and get their redirect (the SDK then remembers the new home).
      if (r.moved > 0) await Bun.sleep(Math.max(0, Math.min(DRAIN_REDIRECT_GRACE_MS, budget - (performance.now() - t0))));
    }
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.expireTimer) clearInterval(this.expireTimer);
    this.loop.stop();
    // 1. Stop accepting; established connections stay for now.
    this.tcp?.stop(false);
    this.tls?.stop(false);
    // Bun.serve's stop(false) also leaves the open WebSockets alone: they get their close below.
    this.ws?.stop(false);
    this.wss?.stop(false);
    // 2. Commit what is buffered before anyone is told to leave: every message accepted so far becomes
    //    durable, and its sender gets `sent` on the connection it is still on (no needless resends).
    //    Stanzas the transport still holds back (its pacing) are handled first: they were read, so they count as sent to us.
    this.conns.settle();
    this.queue.flush();
    flushAll();
    // 3. Each client gets its own delay in [1 s, reconnect_spread]: the next process is not met by all of them at once.
    const spreadMs = this.config.shutdown.reconnectSpread * 1000;
    for (const conn of [...this.conns.all]) {
      conn.close(CloseReason.SERVER_SHUTDOWN, "the server is shutting down", 1000 + Math.floor(Math.random() * Math.max(0, spreadMs - 1000)));
    }
    flushAll();
    // 4. Let the close frames leave: wait, bounded, for the peers to hang up (a socket that still holds
    //    unsent bytes when the process exits loses them).
    const until = Date.now() + (opts.graceMs ?? Math.min(5000, (this.config.shutdown.timeout * 1000) / 2));
    while (this.conns.openSockets > 0 && Date.now() < until) await Bun.sleep(10);
    this.queue.flush();
    this.modules.stopAll();
    await this.push.stop(); // open jobs stay in the queue files for the next start
    await this.cluster?.stop(); // after the last commit: the leases are handed back only once nothing more is written
    for (const l of [this.tcp, this.tls, this.ws, this.wss]) l?.stop(true);
    await this.http.stop();
    await this.media.stop();
    this.queue.close();
    this.accounts.close();
    for (const db of this.databases.values()) db.close();
    this.dirLock.release();
  }
}

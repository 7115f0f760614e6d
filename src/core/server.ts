/**
 * Assembles a server: stores, registry, delivery, sessions, the modules it
 * is given, the TCP and TLS listeners and the HTTP endpoint. One object per
 * process; tests start several side by side on ephemeral ports.
 */
import type { Server as HttpServer, Socket, SocketHandler, TCPSocketListener } from "bun";
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import type { Config } from "./config.ts";
import type { ServerContext } from "./context.ts";
import { Delivery } from "./delivery.ts";
import { Directory } from "./directory.ts";
import { Hooks } from "./hooks.ts";
import { log, setLogLevel } from "./log.ts";
import { Metrics, type Counter } from "./metrics.ts";
import type { Module } from "./module.ts";
import { Registry } from "./registry.ts";
import { SeqAllocator } from "./seq.ts";
import { Sessions } from "./session.ts";
import { decodeBody } from "../protocol/codec.ts";
import { CLOSE_REASONS, CloseReason, ErrorCode, ProtocolError } from "../protocol/errors.ts";
import { validateClient, type ClientStanza } from "../protocol/stanzas.ts";
import { SqliteAccountStore, type AccountStore } from "../store/accounts.ts";
import { SqliteDeliveryQueue } from "../store/queue-sqlite.ts";
import type { DeliveryQueue } from "../store/queue.ts";
import { Conn, ConnState, flushAll, type ConnShared, type Transport } from "../transport/connection.ts";
import { loadOrCreateDevCert } from "../transport/devcert.ts";

export interface Listening {
  tcp: number | null;
  tls: number | null;
  http: number | null;
}

export class SwitchboardServer {
  readonly metrics = new Metrics();
  readonly hooks = new Hooks();
  readonly registry = new Registry<Conn>(64);
  readonly accounts: AccountStore;
  readonly queue: DeliveryQueue;
  readonly directory: Directory;
  readonly delivery: Delivery;
  readonly seqs: SeqAllocator;
  readonly sessions: Sessions;
  readonly ctx: ServerContext;
  private modules: Module[] = [];
  private sharedState = new Map<string, object>();
  private tcp: TCPSocketListener<Conn> | null = null;
  private tls: TCPSocketListener<Conn> | null = null;
  private http: HttpServer<undefined> | null = null;
  private sweepTimer: ReturnType<typeof setInterval> | null = null;
  private expireTimer: ReturnType<typeof setInterval> | null = null;
  private conns = new Set<Conn>();
  private stopped = false;
  private m: {
    framesIn: Counter; bytesIn: Counter; framesOut: Counter; bytesOut: Counter; errors: Counter; expired: Counter;
    opened: Record<Transport, Counter>; closes: Record<string, Counter>;
  };

  constructor(readonly config: Config) {
    setLogLevel(config.log.level);
    mkdirSync(config.dataDir, { recursive: true });
    this.accounts = new SqliteAccountStore(config.dataDir, config.queue.durability);
    this.queue = new SqliteDeliveryQueue(config.dataDir, config.queue, this.metrics);
    this.directory = new Directory(this.accounts, config.limits.maxDevices);
    this.seqs = new SeqAllocator(this.accounts);
    const mt = this.metrics;
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
      },
      closes: Object.fromEntries(CLOSE_REASONS.map((r) => [r, mt.counter("switchboard_closes_total", "Connections closed, by reason.", { reason: r })])),
    };
    for (const t of ["tcp", "tls"] as const) {
      mt.gauge("switchboard_connections", "Open connections.", () => this.countConns(t), { transport: t });
    }
    mt.gauge("switchboard_sessions", "Authenticated sessions in the registry.", () => this.registry.size);
    mt.gauge("switchboard_unsent_bytes_max", "Largest unsent output of one connection.", () => this.unsent().max);
    mt.gauge("switchboard_unsent_bytes_total", "Unsent output of all connections.", () => this.unsent().total);
    mt.gauge("switchboard_process_resident_bytes", "Resident set size.", () => process.memoryUsage.rss());
    const stats = {
      pushed: mt.counter("switchboard_deliveries_pushed_total", "Queue items written to a device's connection."),
      acked: mt.counter("switchboard_deliveries_acked_total", "Queue items acknowledged by their device."),
    };
    this.delivery = new Delivery(this.queue, this.registry, config.limits.window, stats, (item, conn) =>
      this.hooks.run("delivery:acked", item, conn),
    );
    const self = this;
    this.ctx = {
      config, accounts: this.accounts, directory: this.directory, registry: this.registry, delivery: this.delivery,
      seqs: this.seqs, metrics: this.metrics, hooks: this.hooks, log,
      sendError(conn, code, message, id, detail) {
        const e: Record<string, unknown> = { t: "err", e: code, m: message };
        if (id !== undefined) e.id = id;
        if (detail !== undefined) e.x = detail;
        conn.send(e);
      },
      shared<T extends object>(name: string, init: () => T): T {
        let s = self.sharedState.get(name) as T | undefined;
        if (!s) self.sharedState.set(name, (s = init()));
        return s;
      },
    };
    this.sessions = new Sessions(this.ctx, (conn) => {
      this.hooks.run("session:ready", conn);
      this.delivery.start(conn);
    });
  }

  private countConns(t: Transport): number {
    let n = 0;
    for (const c of this.conns) if (c.transport === t) n++;
    return n;
  }

  private unsent(): { max: number; total: number } {
    let max = 0;
    let total = 0;
    for (const c of this.conns) {
      const u = c.unsent;
      total += u;
      if (u > max) max = u;
    }
    return { max, total };
  }

  /** Starts a module: its registrations go into the dispatch tables. */
  load(mod: Module): void {
    if (this.modules.some((m) => m.name === mod.name)) throw new Error(`server: module ${mod.name} is already loaded`);
    const regs = mod.start(this.ctx);
    this.hooks.add(mod, regs);
    this.modules.push(mod);
    log.info("module loaded", { module: mod.name, version: mod.version });
  }

  loadedModules(): { name: string; version: string }[] {
    return this.modules.map((m) => ({ name: m.name, version: m.version }));
  }

  async listen(): Promise<Listening> {
    const c = this.config;
    const handler = this.socketHandler();
    if (c.tcp.port >= 0) {
      this.tcp = Bun.listen<Conn>({ hostname: c.tcp.host, port: c.tcp.port, socket: handler("tcp") });
    }
    if (c.tls.port >= 0) {
      let key: string, cert: string;
      if (c.tls.cert && c.tls.key) {
        cert = await Bun.file(c.tls.cert).text();
        key = await Bun.file(c.tls.key).text();
      } else {
        const dev = await loadOrCreateDevCert(join(c.dataDir, "tls"));
        if (dev.created) log.warn("generated a development TLS certificate; set tls.cert and tls.key for production", { cert: dev.certPath });
        ({ key, cert } = dev);
      }
      this.tls = Bun.listen<Conn>({ hostname: c.tls.host, port: c.tls.port, tls: { key, cert }, socket: handler("tls") });
    }
    if (c.http.port >= 0) {
      this.http = Bun.serve({ hostname: c.http.host, port: c.http.port, fetch: (req) => this.httpRequest(req) });
    }
    this.sweepTimer = setInterval(() => this.sweep(), c.timeouts.sweep * 1000);
    this.expireTimer = setInterval(() => this.expire(), c.queue.expireEvery * 1000);
    this.expire(); // what expired while the server was down
    const where = { tcp: this.tcp?.port ?? null, tls: this.tls?.port ?? null, http: this.http?.port ?? null };
    log.info("listening", { ...where, dataDir: c.dataDir, serverId: this.accounts.serverId() });
    return where;
  }

  private httpRequest(req: Request): Response {
    const path = new URL(req.url).pathname;
    if (path === "/healthz") return new Response("ok\n", { headers: { "content-type": "text/plain" } });
    if (path === "/metrics") {
      return new Response(this.metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } });
    }
    return new Response("not found\n", { status: 404 });
  }

  private socketHandler(): (t: Transport) => SocketHandler<Conn> {
    const cfg = this.config;
    const framesOut = this.m.framesOut;
    const bytesOut = this.m.bytesOut;
    const shared: ConnShared = {
      maxFrame: cfg.limits.maxFrame,
      outboundLimit: cfg.limits.outboundBytes,
      onClosed: (conn: Conn, reason: CloseReason) => this.onClosed(conn, reason),
      onOutBytes: (n: number) => bytesOut.inc(n),
      onOutFrame: () => framesOut.inc(),
    };
    return (transport) => ({
      binaryType: "uint8array",
      open: (socket: Socket<Conn>) => {
        // A fresh object per socket: Bun.listen({data}) would share one.
        // Date.now(), not the coarse clock (see data below): the auth timeout must not fire early either.
        const conn = new Conn(socket, transport, shared, Date.now());
        socket.data = conn;
        this.conns.add(conn);
        this.m.opened[transport].inc();
        if (this.stopped) conn.close(CloseReason.SERVER_SHUTDOWN, undefined, 1000);
      },
      data: (socket: Socket<Conn>, chunk: Uint8Array) => {
        const conn = socket.data;
        if (conn.state === ConnState.CLOSED) return;
        this.m.bytesIn.inc(chunk.length);
        // The real time, not the sweep's coarse clock: that one lags by up to a sweep interval,
        // so a connection was reaped up to a sweep early, e.g. after 2.0 s of silence with
        // it = 3 s (§4.1: "never before it"; test/wire/timers.test.ts). One Date.now() per read.
        conn.lastSeen = Date.now();
        try {
          conn.decoder.feed(chunk, (body) => this.frame(conn, body));
        } catch (e) {
          if (e instanceof ProtocolError) {
            this.ctx.sendError(conn, e.code, e.message);
            conn.close(e.code === ErrorCode.FRAME_TOO_LARGE ? CloseReason.FRAME_TOO_LARGE : CloseReason.PROTOCOL_ERROR, e.message);
          } else {
            log.error("frame handling crashed", { err: e as Error, stack: (e as Error).stack });
            conn.close(CloseReason.PROTOCOL_ERROR, "internal error");
          }
        }
        flushAll(); // every connection this read touched is flushed once (NATS's pcd)
      },
      drain: (socket: Socket<Conn>) => {
        const conn = socket.data;
        conn.flush();
        // Deliveries held back because the socket was full (Conn.hasRoomFor) go out now.
        if (conn.behind && conn.state === ConnState.READY) {
          this.delivery.refill(conn);
          flushAll();
        }
      },
      close: (socket: Socket<Conn>, err?: Error) => {
        const conn = socket.data;
        if (!conn) return;
        conn.closed(err ? CloseReason.SOCKET_ERROR : CloseReason.PEER_CLOSED);
        this.conns.delete(conn);
      },
      error: (socket: Socket<Conn>, err: Error) => {
        log.debug("socket error", { err, remote: socket.remoteAddress });
      },
      handshake: (socket: Socket<Conn>, success: boolean) => {
        if (!success && socket.data) {
          socket.data.closed(CloseReason.TLS_ERROR);
          socket.end();
        }
      },
    });
  }

  /** One frame body from a connection. Protocol errors that are not fatal cost one unit of the error budget. */
  private frame(conn: Conn, body: Uint8Array): void {
    if (conn.state === ConnState.CLOSED) return;
    this.m.framesIn.inc();
    let decoded: unknown;
    try {
      decoded = decodeBody(body);
    } catch (e) {
      return this.reject(conn, (e as ProtocolError).code ?? ErrorCode.BAD_FRAME, (e as Error).message);
    }
    const v = validateClient(decoded);
    if (!v.ok) return this.reject(conn, v.code, v.message, v.id);
    const s: ClientStanza = v.stanza;
    switch (conn.state) {
      case ConnState.HELLO:
        if (s.t !== "hello") {
          this.ctx.sendError(conn, ErrorCode.HELLO_REQUIRED, "the first frame must be hello");
          conn.close(CloseReason.PROTOCOL_ERROR, "the first frame must be hello");
          return;
        }
        return this.sessions.hello(conn, s);
      case ConnState.AUTH:
        switch (s.t) {
          case "auth": return this.sessions.auth(conn, s);
          case "enroll": return this.sessions.enroll(conn, s);
          case "link": return this.sessions.link(conn, s);
          case "ping": return conn.send(pong(s.n));
          case "close": return conn.close(CloseReason.CLIENT_QUIT);
          default: return this.reject(conn, ErrorCode.NOT_AUTHENTICATED, `${s.t} is not allowed before authentication`, idOf(s));
        }
      case ConnState.LINKING:
        switch (s.t) {
          case "ping": return conn.send(pong(s.n));
          case "close": return conn.close(CloseReason.CLIENT_QUIT);
          default: return this.reject(conn, ErrorCode.NOT_AUTHENTICATED, "waiting for the link to be approved", idOf(s));
        }
      case ConnState.READY:
        switch (s.t) {
          case "ack": return this.delivery.ack(conn, s.q);
          case "ping": return conn.send(pong(s.n));
          case "iq": {
            if (s.op === "link.approve") {
              const code = s.a?.code;
              if (typeof code !== "string") return conn.send({ t: "res", id: s.id, ok: false, e: ErrorCode.BAD_FIELD, m: "a.code must be a string" });
              const r = this.sessions.approve(conn, code);
              return conn.send(r.ok ? { t: "res", id: s.id, ok: true, r: { d: r.device } } : { t: "res", id: s.id, ok: false, e: r.e, m: r.m });
            }
            const id = s.id;
            void this.hooks.dispatchIq(s.op, conn, s.a ?? {}).then((r) => {
              conn.send(r.ok ? (r.r === undefined ? { t: "res", id, ok: true } : { t: "res", id, ok: true, r: r.r }) : { t: "res", id, ok: false, e: r.e, m: r.m });
            });
            return;
          }
          case "close": return conn.close(CloseReason.CLIENT_QUIT);
          case "hello": case "auth": case "enroll": case "link":
            return this.reject(conn, ErrorCode.ALREADY_AUTHENTICATED, `${s.t} is only valid before authentication`);
          default:
            if (!this.hooks.dispatchStanza(s.t, conn, s)) this.reject(conn, ErrorCode.UNKNOWN_KIND, `no module handles ${s.t}`, idOf(s));
        }
    }
  }

  private reject(conn: Conn, code: ErrorCode, message: string, id?: string | number): void {
    this.m.errors.inc();
    this.ctx.sendError(conn, code, message, id);
    if (++conn.errors > this.config.limits.errorBudget) {
      this.ctx.sendError(conn, ErrorCode.TOO_MANY_ERRORS, `more than ${this.config.limits.errorBudget} invalid frames`);
      conn.close(CloseReason.PROTOCOL_ERROR, "too many invalid frames");
    }
  }

  private onClosed(conn: Conn, reason: CloseReason): void {
    this.m.closes[reason]?.inc();
    this.conns.delete(conn);
    this.sessions.closed(conn);
    if (conn.device !== 0 && this.registry.remove(conn)) this.hooks.run("session:closed", conn, reason);
    if (log.enabled("debug")) log.debug("closed", { reason, account: conn.account, device: conn.device, remote: conn.remote });
  }

  /** Coarse timers: idle and unauthenticated connections, link expiry. Bun's socket.timeout() only notifies, every ~4 s. */
  private sweep(): void {
    const now = Date.now();
    const idleMs = this.config.timeouts.idle * 1000;
    const authMs = this.config.timeouts.auth * 1000;
    for (const conn of this.conns) {
      if (conn.state === ConnState.READY || conn.state === ConnState.LINKING) {
        if (now - conn.lastSeen > idleMs) conn.close(CloseReason.IDLE_TIMEOUT, `silent for more than ${this.config.timeouts.idle} s`);
      } else if (conn.state !== ConnState.CLOSED && now - conn.openedAt > authMs) {
        conn.close(CloseReason.AUTH_TIMEOUT, `not authenticated within ${this.config.timeouts.auth} s`);
      }
    }
    this.sessions.sweep(now);
    flushAll();
  }

  /** Retention: items older than queue.retention seconds expire, loudly (gap notices, `exp` receipts). */
  expire(now = Date.now()): number {
    const expired = this.delivery.expire(now - this.config.queue.retention * 1000);
    for (const it of expired) this.hooks.run("delivery:expired", it);
    if (expired.length) log.info("expired queued items", { count: expired.length });
    this.m.expired.inc(expired.length);
    flushAll();
    return expired.length;
  }

  /** Stops accepting, tells clients to come back later, commits the queues, closes the stores. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.expireTimer) clearInterval(this.expireTimer);
    this.tcp?.stop(false);
    this.tls?.stop(false);
    for (const conn of [...this.conns]) conn.close(CloseReason.SERVER_SHUTDOWN, "the server is shutting down", 1000 + Math.floor(Math.random() * 4000));
    flushAll();
    this.queue.flush();
    for (const m of [...this.modules].reverse()) {
      try {
        m.stop?.();
      } catch (e) {
        log.error("module stop failed", { module: m.name, err: e as Error });
      }
      this.hooks.remove(m.name);
    }
    this.tcp?.stop(true);
    this.tls?.stop(true);
    await this.http?.stop(true);
    this.queue.close();
    this.accounts.close();
  }
}

/**
 * The answer to a ping. `== null`, not `=== undefined`: a nil `n` counts as absent (§3), and the
 * validator lets nil optionals through, so `ping {n: nil}` was answered `pong {n: nil}`.
 */
function pong(n: number | null | undefined): { t: "pong"; n?: number } {
  return n == null ? { t: "pong" } : { t: "pong", n };
}

function idOf(s: ClientStanza): string | number | undefined {
  return "id" in s ? s.id : undefined;
}

/**
 * The HTTP endpoint: /healthz, /readyz, /metrics, and from loopback only
 * /trace, POST /admin/reload and the rest of the admin API (README,
 * "Operations"): GET /admin/status, GET /admin/users, POST
 * /admin/users/NAME/{delete,disable,enable}, POST
 * /admin/users/NAME/devices/N/kick; /media/<id> for attachments (src/core/media/http.ts); the web
 * client at /app (src/core/webapp.ts). It reads the server's state through the
 * functions it is given and holds none of its own.
 */
import type { Server as HttpServer, WebSocketHandler } from "bun";
import type { WsSocket } from "../transport/ws.ts";
import { ErrorCode, type Result } from "../protocol/errors.ts";
import { storageCause, type StorageAlarm } from "../store/errors.ts";
import type { Admin } from "./admin.ts";
import type { Metrics } from "./metrics.ts";
import type { ReloadReport } from "./loader.ts";
import type { Trace, TraceEntry } from "./trace.ts";
import type { MediaService } from "./media/service.ts";
import { mediaRequest } from "./media/http.ts";
import { WebApp } from "./webapp.ts";

/** What /readyz asks beyond the server's own state (the end-to-end canary, src/ops/canary.ts). */
export type ReadinessProbe = () => { ok: boolean; reason?: string; [detail: string]: unknown };

export interface HttpDeps {
  metrics: Metrics;
  trace: Trace;
  reload(): Promise<ReloadReport>;
  /** "draining" (SIGTERM came or stopped), "not_started", or null when serving. */
  notReady(): "draining" | "not_started" | null;
  readiness(): ReadinessProbe | null;
  /** Cluster mode's status for GET /cluster (src/core/cluster/node.ts); null on a single node. */
  cluster?(): object | null;
  /** POST /cluster/move: moves a home shard this node holds to another node (`switchboard cluster move`); null on a single node. */
  clusterMove?(shard: number, to: string): Promise<{ ok: boolean }> | null;
  /** POST /cluster/rebalance: moves the shards held here whose placement is another live node back to it; null on a single node. */
  clusterRebalance?(): Promise<{ moved: number; left: number }> | null;
  /** Store files that cannot commit (disk full, I/O error): /readyz is 503 while there are any. */
  storage: StorageAlarm;
  admin: Admin;
  /** Attachments: /media/<id> (tus upload, ranged download; src/core/media/http.ts). */
  media?: MediaService;
  /** The WebSocket transport at one path of this port (ws.http_path; src/transport/ws.ts). */
  ws?: { path: string; handler: WebSocketHandler<WsSocket>; upgrade(req: Request, server: HttpServer<WsSocket>): Response | undefined };
  /** The web client at /app (http.app; src/core/webapp.ts). */
  app?: WebApp;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

export class HttpEndpoint {
  /** http.port and its HTTPS twin (http.tls_port): the same routes on each. */
  private readonly servers: HttpServer<WsSocket>[] = [];

  constructor(private readonly deps: HttpDeps) {}

  /** Opens one more listener of these routes; with `tls`, HTTPS (and wss:// at ws.http_path). Returns the port bound. */
  listen(hostname: string, port: number, tls?: { key: string; cert: string }): number {
    // A tus PATCH may carry a whole blob (the SDK sends 4 MiB): Bun's default body limit is 128 MiB.
    const maxRequestBodySize = Math.max(128 << 20, (this.deps.media?.maxFile ?? 0) + (1 << 20));
    const ws = this.deps.ws;
    const server = Bun.serve<WsSocket>({
      hostname, port, maxRequestBodySize, ...(tls ? { tls } : {}),
      ...(ws ? { websocket: ws.handler } : {}),
      fetch: (req, server) => (ws && new URL(req.url).pathname === ws.path ? ws.upgrade(req, server) : this.request(req, server)),
    } as Parameters<typeof Bun.serve<WsSocket>>[0]);
    this.servers.push(server);
    return server.port ?? port;
  }

  async stop(): Promise<void> {
    await Promise.all(this.servers.splice(0).map((s) => s.stop(true)));
  }

  /** The peer's address as the listener it came in on sees it: admin and /trace keep their loopback rule over HTTPS too. */
  private fromLoopback(req: Request, server: HttpServer<WsSocket>): boolean {
    return LOOPBACK.test(server.requestIP(req)?.address ?? "");
  }

  private request(req: Request, server: HttpServer<WsSocket>): Response | Promise<Response> {
    const path = new URL(req.url).pathname;
    if (this.deps.media && (path === "/media" || path.startsWith("/media/"))) return mediaRequest(this.deps.media, req, path);
    if (this.deps.app && WebApp.owns(path)) return this.deps.app.request(req, path);
    if (path === "/admin/reload") return this.adminReload(req, server);
    if (path.startsWith("/admin/")) return this.adminRequest(req, server, path);
    if (path === "/healthz") return new Response("ok\n", { headers: { "content-type": "text/plain" } });
    if (path === "/readyz") return this.readyz();
    if (path === "/trace") return this.traceRequest(req, server);
    if (path === "/cluster") return this.clusterStatus();
    if (path === "/cluster/move" || path === "/cluster/rebalance") return this.clusterMove(req, server, path);
    if (path === "/metrics") {
      return new Response(this.deps.metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } });
    }
    return new Response("not found\n", { status: 404 });
  }

  /** POST /admin/reload, from loopback only: the reload report as JSON (`switchboard reload`). */
  private async adminReload(req: Request, server: HttpServer<WsSocket>): Promise<Response> {
    if (!this.fromLoopback(req, server)) return new Response("reload is allowed from loopback only\n", { status: 403 });
    if (req.method !== "POST") return new Response("use POST\n", { status: 405, headers: { allow: "POST" } });
    return Response.json(await this.deps.reload());
  }

  /**
   * Readiness: 200 while the server accepts work and the last end-to-end
   * canary round trip is recent; 503 with the reason otherwise (draining,
   * not started, the canary's failure or lag). A small JSON body either way.
   */
  private readyz(): Response {
    const status = (ok: boolean, body: Record<string, unknown>) =>
      Response.json({ ready: ok, ...body }, { status: ok ? 200 : 503, headers: { "cache-control": "no-store" } });
    const not = this.deps.notReady();
    if (not !== null) return status(false, { reason: not });
    const fault = this.deps.storage.first();
    if (fault !== null) return status(false, { reason: "storage", storage: { cause: fault.cause, file: fault.file, since: fault.since, message: fault.message, files: this.deps.storage.list().map((f) => f.file) } });
    const probe = this.deps.readiness();
    if (probe === null) return status(true, { canary: "off" });
    const { ok, ...detail } = probe();
    return status(ok, detail);
  }

  /**
   * GET /trace?id=CID[&from=ACCOUNT]: the delivery trace of recent messages
   * with that client id (src/core/trace.ts). Loopback only: it names who
   * wrote to whom and when.
   */
  private traceRequest(req: Request, server: HttpServer<WsSocket>): Response {
    if (!this.fromLoopback(req, server)) return new Response("trace is allowed from loopback only\n", { status: 403 });
    const q = new URL(req.url).searchParams;
    const id = q.get("id");
    const from = q.get("from") ?? undefined;
    if (!id) return Response.json({ error: "give the message's client id: /trace?id=CID (and &from=ACCOUNT)" }, { status: 400 });
    const trace = this.deps.trace;
    const messages: TraceEntry[] = trace.find(id, from);
    const body = { id, from: from ?? null, tracing: { size: trace.size, sample: trace.sample, held: trace.held }, messages };
    return Response.json(body, { status: messages.length ? 200 : 404 });
  }

  /**
   * POST /cluster/move?shard=N&to=NODE, or POST /cluster/rebalance, from loopback only: 200 with the result, 409
   * with the reason when a move is refused.
   */
  private async clusterMove(req: Request, server: HttpServer<WsSocket>, path: string): Promise<Response> {
    if (!this.fromLoopback(req, server)) return new Response("cluster moves are allowed from loopback only\n", { status: 403 });
    if (req.method !== "POST") return new Response("use POST\n", { status: 405, headers: { allow: "POST" } });
    server.timeout(req, 0); // a move waits up to 30 s for the target's ack: past Bun's 10 s idle timeout
    const q = new URL(req.url).searchParams;
    const r = path === "/cluster/rebalance"
      ? (this.deps.clusterRebalance?.()?.then((x) => ({ ok: true, ...x })) ?? null)
      : (this.deps.clusterMove?.(Number(q.get("shard") ?? "x"), q.get("to") ?? "") ?? null);
    if (r === null) return Response.json({ error: "not a cluster node (cluster.redis is not set)" }, { status: 404 });
    const res = await r;
    return Response.json(res, { status: res.ok ? 200 : 409 });
  }

  /** GET /cluster: nodes, shards per node, epochs, lease and view ages (`switchboard cluster status`); 404 on a single node. */
  private clusterStatus(): Response {
    const st = this.deps.cluster?.() ?? null;
    if (st === null) return Response.json({ error: "not a cluster node (cluster.redis is not set)" }, { status: 404 });
    return Response.json(st, { headers: { "cache-control": "no-store" } });
  }

  /**
   * The admin API of `switchboard status`, `user ...` and `device kick`, from loopback only (as
   * reload): what it changes and shows is the operator's, and it names every account.
   */
  private adminRequest(req: Request, server: HttpServer<WsSocket>, path: string): Response {
    if (!this.fromLoopback(req, server)) return new Response("the admin API is allowed from loopback only\n", { status: 403 });
    try {
      return this.adminOperation(req, path);
    } catch (e) {
      // A store file on a full or failing disk: the write that failed was rolled back; the operation may be run again.
      const cause = storageCause(e);
      if (cause === null) throw e;
      const message = `the server cannot write its files now (${cause === "disk_full" ? "its disk is full" : "I/O errors"}); run the command again once it has room`;
      return Response.json({ ok: false, reason: ErrorCode.STORAGE_UNAVAILABLE, message }, { status: 503 });
    }
  }

  private adminOperation(req: Request, path: string): Response {
    const admin = this.deps.admin;
    const get = req.method === "GET";
    const post = req.method === "POST";
    if (path === "/admin/status") return get ? Response.json(admin.status()) : notAllowed("GET");
    if (path === "/admin/users") return get ? Response.json({ users: admin.users() }) : notAllowed("GET");
    const m = /^\/admin\/users\/([^/]+)\/(?:(delete|disable|enable)|devices\/([^/]+)\/kick)$/.exec(path);
    if (m === null) return Response.json({ ok: false, reason: ErrorCode.NOT_FOUND, message: `no admin operation ${path}` }, { status: 404 });
    if (!post) return notAllowed("POST");
    const name = decodeURIComponent(m[1]!);
    if (m[3] !== undefined) {
      const d = Number(m[3]);
      if (!/^\d+$/.test(m[3]) || d < 1) return answer({ ok: false, reason: ErrorCode.BAD_FIELD, message: `${JSON.stringify(m[3])} is not a device id` });
      return answer(admin.kick(name, d));
    }
    return m[2] === "delete" ? answer(admin.deleteUser(name)) : answer(admin.setDisabled(name, m[2] === "disable"));
  }
}

const notAllowed = (allow: string) => new Response(`use ${allow}\n`, { status: 405, headers: { allow } });

/** An admin operation's Result as JSON: 200 with its value, or the reason with a status that says whose mistake it was. */
function answer<T extends object>(r: Result<T>): Response {
  if (r.ok) return Response.json({ ok: true, ...r.value });
  const status = r.reason === ErrorCode.UNKNOWN_USER || r.reason === ErrorCode.UNKNOWN_DEVICE ? 404 : r.reason === ErrorCode.FORBIDDEN ? 403 : 400;
  // A cluster's account shard that is moving (core/admin.ts `check`): when to ask again, as a field and a header.
  if (r.reason === ErrorCode.RETRY_AFTER) {
    const ms = (r.detail as { retry_ms?: number } | undefined)?.retry_ms ?? 1000; // a refusal that names no delay: a second
    return Response.json({ ok: false, reason: r.reason, message: r.message, retry_ms: ms }, { status: 503, headers: { "retry-after": String(Math.ceil(ms / 1000)) } });
  }
  return Response.json({ ok: false, reason: r.reason, message: r.message }, { status });
}

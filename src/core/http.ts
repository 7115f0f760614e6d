/**
 * The HTTP endpoint: /healthz, /readyz, /metrics, and from loopback only
 * /trace and POST /admin/reload. It reads the server's state through the
 * functions it is given and holds none of its own.
 */
import type { Server as HttpServer } from "bun";
import type { Metrics } from "./metrics.ts";
import type { ReloadReport } from "./loader.ts";
import type { Trace, TraceEntry } from "./trace.ts";

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
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

export class HttpEndpoint {
  private server: HttpServer<undefined> | null = null;

  constructor(private readonly deps: HttpDeps) {}

  listen(hostname: string, port: number): number {
    this.server = Bun.serve({ hostname, port, fetch: (req) => this.request(req) });
    return this.server.port ?? port;
  }

  async stop(): Promise<void> {
    await this.server?.stop(true);
  }

  private fromLoopback(req: Request): boolean {
    return LOOPBACK.test(this.server?.requestIP(req)?.address ?? "");
  }

  private request(req: Request): Response | Promise<Response> {
    const path = new URL(req.url).pathname;
    if (path === "/admin/reload") return this.adminReload(req);
    if (path === "/healthz") return new Response("ok\n", { headers: { "content-type": "text/plain" } });
    if (path === "/readyz") return this.readyz();
    if (path === "/trace") return this.traceRequest(req);
    if (path === "/cluster") return this.clusterStatus();
    if (path === "/metrics") {
      return new Response(this.deps.metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } });
    }
    return new Response("not found\n", { status: 404 });
  }

  /** POST /admin/reload, from loopback only: the reload report as JSON (`switchboard reload`). */
  private async adminReload(req: Request): Promise<Response> {
    if (!this.fromLoopback(req)) return new Response("reload is allowed from loopback only\n", { status: 403 });
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
  private traceRequest(req: Request): Response {
    if (!this.fromLoopback(req)) return new Response("trace is allowed from loopback only\n", { status: 403 });
    const q = new URL(req.url).searchParams;
    const id = q.get("id");
    const from = q.get("from") ?? undefined;
    if (!id) return Response.json({ error: "give the message's client id: /trace?id=CID (and &from=ACCOUNT)" }, { status: 400 });
    const trace = this.deps.trace;
    const messages: TraceEntry[] = trace.find(id, from);
    const body = { id, from: from ?? null, tracing: { size: trace.size, sample: trace.sample, held: trace.held }, messages };
    return Response.json(body, { status: messages.length ? 200 : 404 });
  }

  /** GET /cluster: nodes, shards per node, epochs, lease and view ages (`switchboard cluster status`); 404 on a single node. */
  private clusterStatus(): Response {
    const st = this.deps.cluster?.() ?? null;
    if (st === null) return Response.json({ error: "not a cluster node (cluster.redis is not set)" }, { status: 404 });
    return Response.json(st, { headers: { "cache-control": "no-store" } });
  }
}

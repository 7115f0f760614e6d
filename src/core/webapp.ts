/**
 * The web client at /app on the HTTP port (http.app; the client's source is
 * web/app/, docs/WEBSOCKET.md "The web client"). Static files only: the page,
 * its stylesheet, one script bundled with Bun.build for the browser, and
 * /app/config.json, which tells the page where the WebSocket transport is on
 * this port (ws.http_path).
 *
 * Built at its first request, not prebuilt: `npm install` runs no build of
 * ours (package.json allowScripts), so a prebuilt bundle would be a
 * committed artefact that goes stale whenever src/client changes; built from
 * the source the server runs, the page and the server always speak the same
 * protocol. The cost is one bundle per process, paid by the first visitor
 * (7 ms for 76 KB minified, one run here), never by a server nobody opens /app on,
 * and none of it at start-up. A failed build is answered 500 with the
 * bundler's messages and tried again at the next request.
 *
 * The compiled binary (`npm run build`) carries no sources to bundle at run
 * time: its build bundles the page first (tools/build-app.ts, with
 * bundleApp below, the same build) and embeds the files (`--asset`), which
 * are served as they are. Built with the binary from the same tree, they
 * cannot go stale either.
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { log } from "./log.ts";

/** Where the page's sources are: next to src/ in a checkout or an installed package (package.json "files" has web/). */
export const APP_SOURCE = resolve(import.meta.dir, "../../web/app");
/**
 * The prebuilt page inside the compiled binary: `--asset dist/app` puts its files at app/ of the binary's root,
 * which is every bundled module's import.meta.dir there. From a checkout nothing is at src/core/app.
 */
export const APP_EMBEDDED = join(import.meta.dir, "app");
/** The files of the built page: what tools/build-app.ts writes and the binary serves. */
export const APP_FILES = ["index.html", "style.css", "app.js"] as const;

/** Bundles the page at `source` (main.ts) for the browser; throws with the bundler's messages. */
export async function bundleApp(source: string): Promise<string> {
  const entry = join(source, "main.ts");
  // Browser conditions: package.json "imports" gives #node-keys its node-free twin (src/client/keys-browser.ts).
  const fail = (why: string) => new Error(`bun build --target browser ${entry}: ${why}`);
  const built = await Bun.build({ entrypoints: [entry], target: "browser", minify: true }).catch((e: AggregateError) => {
    throw fail((e.errors ?? []).map(String).join("\n") || e.message); // Bun throws "Bundle failed" with the messages in `errors`
  });
  if (!built.success || !built.outputs[0]) throw fail(built.logs.join("\n"));
  return built.outputs[0].text();
}

/**
 * The page talks to its own origin (the WebSocket and /media of this port) and to where attachments are
 * (media.public_url, when another origin); attachments are shown from blob: URLs.
 */
function headers(mediaUrl: string): Record<string, string> {
  let media = "";
  try {
    if (mediaUrl) media = ` ${new URL(mediaUrl).origin}`;
  } catch {} // config.ts does not parse it either; an unparsable one is the media service's to refuse
  return {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "content-security-policy": `default-src 'self'; connect-src 'self' ws: wss: blob:${media}; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'`,
  };
}

export class WebApp {
  private bundle: Promise<string> | null = null;
  private readonly headers: Record<string, string>;
  /** Where the files served are: the prebuilt page when there is one (the binary), else the sources. */
  private readonly dir: string;
  private readonly prebuilt: boolean;

  /**
   * `wsPath`: ws.http_path (empty: none, and the page says how to set it); `mediaUrl`: media.public_url;
   * `source`: the page's sources, bundled at the first request; `embedded`: a built page (APP_FILES), served as it is.
   */
  constructor(private readonly wsPath: string, mediaUrl = "", source = APP_SOURCE, embedded = APP_EMBEDDED) {
    this.headers = headers(mediaUrl);
    this.prebuilt = APP_FILES.every((f) => existsSync(join(embedded, f)));
    this.dir = this.prebuilt ? embedded : source;
  }

  /** Whether `path` is the app's (the caller routes it here). */
  static owns(path: string): boolean {
    return path === "/app" || path.startsWith("/app/");
  }

  async request(req: Request, path: string): Promise<Response> {
    if (req.method !== "GET" && req.method !== "HEAD") return new Response("use GET\n", { status: 405, headers: { allow: "GET, HEAD" } });
    if (path === "/app") return new Response(null, { status: 301, headers: { location: "/app/" } });
    if (!existsSync(join(this.dir, "index.html"))) {
      // Neither the sources (a checkout, the npm package) nor a built page (npm run build embeds one).
      return new Response(`the web client's files (${this.dir}) are not there: serve from a checkout or the npm package, build the binary with npm run build, or set http.app = false\n`, { status: 404 });
    }
    switch (path) {
      case "/app/":
      case "/app/index.html":
        return this.file("index.html", "text/html; charset=utf-8");
      case "/app/style.css":
        return this.file("style.css", "text/css; charset=utf-8");
      case "/app/config.json":
        return Response.json({ ws: this.wsPath || null }, { headers: this.headers });
      case "/app/app.js":
        return this.script();
      default:
        return new Response("not found\n", { status: 404 });
    }
  }

  private file(name: string, type: string): Response {
    return new Response(readFileSync(join(this.dir, name)), { headers: { ...this.headers, "content-type": type } });
  }

  private async script(): Promise<Response> {
    try {
      return new Response(await (this.bundle ??= this.build()), { headers: { ...this.headers, "content-type": "text/javascript; charset=utf-8" } });
    } catch (e) {
      this.bundle = null; // tried again at the next request
      log.error("web client build failed", { error: (e as Error).message });
      return new Response(`the web client did not build:\n${(e as Error).message}\n`, { status: 500, headers: { "content-type": "text/plain" } });
    }
  }

  private async build(): Promise<string> {
    return this.prebuilt ? readFileSync(join(this.dir, "app.js"), "utf8") : bundleApp(this.dir);
  }
}

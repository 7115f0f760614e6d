/**
 * CORS for `/media` (docs/MEDIA.md, "From another origin"): a web app served
 * from another origin than the HTTP port (its own host, a CDN) uploads with
 * tus and downloads with Range, so the browser needs a preflight answer for
 * the tus headers and `Access-Control-Expose-Headers` for what the SDK reads
 * (Upload-Offset after HEAD and PATCH, Content-Range after a ranged GET).
 *
 * Which origins: `ws.origins`, the WebSocket transport's allow-list, with the
 * same meaning (empty: any origin). A page that may open the session may fetch
 * its attachments; a second list would only be a way to get them out of step.
 * Any origin is safe to allow when the list is empty because nothing on /media
 * rides on cookies: an upload needs its bearer token (from media.upload over
 * the session) and a download its unguessable URL (from the message), both of
 * which a page can only have by being the user's client. Hence no
 * `Access-Control-Allow-Credentials`.
 *
 * An origin not allowed gets no CORS header at all (its browser refuses the
 * response); requests without Origin (the SDK in Bun/Node, curl) are untouched.
 */

/** What a preflight may ask for: the tus core headers, Authorization (the upload token), Range. */
const ALLOW_HEADERS = "Authorization, Content-Type, Range, Tus-Resumable, Upload-Offset, Upload-Length, Upload-Metadata";
/** Response headers beyond the CORS-safelisted ones that a client reads (tus, Range, retries). */
const EXPOSE_HEADERS = "Tus-Resumable, Tus-Version, Tus-Max-Size, Upload-Offset, Upload-Length, Location, Content-Range, Content-Length, Accept-Ranges, Retry-After";
const METHODS = "GET, HEAD, PATCH, OPTIONS";
/** Chromium caps a preflight cache at 2 h; an upload of many PATCHes then costs one preflight. */
const MAX_AGE = "7200";

export class MediaCors {
  private readonly allowed: ReadonlySet<string>;

  /** `origins`: ws.origins as a list (parseOrigins); empty allows any origin. */
  constructor(origins: readonly string[]) {
    this.allowed = new Set(origins);
  }

  /** The request's Origin when a page of it may read the response, else null. */
  private origin(req: Request): string | null {
    const o = req.headers.get("origin");
    return o !== null && (this.allowed.size === 0 || this.allowed.has(o)) ? o : null;
  }

  /** A CORS preflight (OPTIONS with Access-Control-Request-Method) from an allowed origin: its answer; else null. */
  preflight(req: Request): Response | null {
    if (req.method !== "OPTIONS" || !req.headers.has("access-control-request-method")) return null;
    const o = this.origin(req);
    if (o === null) return null; // answered as any OPTIONS (tus discovery), without CORS: the browser stops there
    return new Response(null, {
      status: 204,
      headers: {
        "Access-Control-Allow-Origin": o,
        "Access-Control-Allow-Methods": METHODS,
        "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": MAX_AGE,
        Vary: "Origin",
      },
    });
  }

  /**
   * Adds the CORS headers to `res` for an allowed origin. Every /media response varies by Origin,
   * allowed or not: a GET is cacheable for a year (a blob never changes), and a cached copy fetched
   * without Origin (no Allow-Origin) must not be served to a cross-origin fetch, which would fail.
   */
  apply(req: Request, res: Response): Response {
    res.headers.append("Vary", "Origin");
    const o = this.origin(req);
    if (o !== null) {
      res.headers.set("Access-Control-Allow-Origin", o);
      res.headers.set("Access-Control-Expose-Headers", EXPOSE_HEADERS);
    }
    return res;
  }
}

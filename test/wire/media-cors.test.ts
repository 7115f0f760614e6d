/**
 * CORS on /media (src/core/media/cors.ts) over real HTTP against a real server
 * process: the preflight of a tus PATCH and of a ranged GET from an origin in
 * ws.origins is answered, the responses carry Allow-Origin and the headers the
 * SDK reads; an origin not in the list gets no CORS header; a request without
 * Origin is untouched; every /media response varies by Origin. With ws.origins
 * empty any origin is allowed, as for the WebSocket. (A browser on a second
 * origin doing the same: test/ws/browser-e2e.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { startServer, type TestServer } from "../helpers/harness.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";

interface Slot { id: string; url: string; tok: string }
const APP = "https://app.example";
const tus = (s: Slot) => ({ "Tus-Resumable": "1.0.0", Authorization: `Bearer ${s.tok}` });
const preflight = (url: string, origin: string, method: string, headers: string) =>
  fetch(url, { method: "OPTIONS", headers: { Origin: origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers } });

describe("ws.origins = https://app.example", () => {
  let srv: TestServer;
  let c: SwitchboardClient;
  beforeAll(async () => {
    srv = await startServer({ args: ["--ws-origins", `${APP}, https://other.example`, "--media-disk-high-water", "100"] });
    c = await srv.client(await srv.newDevice("alice"));
  });
  afterAll(() => {
    c?.close();
    srv?.cleanup();
  });

  test("a tus upload and a ranged download from an allowed origin: preflights answered, headers exposed", async () => {
    const bytes = randomBytes(1000);
    const s = await c.request<Slot>("media.upload", { size: bytes.length });
    const pre = await preflight(s.url, APP, "PATCH", "authorization, content-type, tus-resumable, upload-offset");
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe(APP);
    expect(pre.headers.get("access-control-allow-methods")).toContain("PATCH");
    const allowed = pre.headers.get("access-control-allow-headers")!.toLowerCase().split(/,\s*/);
    for (const h of ["authorization", "content-type", "range", "tus-resumable", "upload-offset", "upload-length", "upload-metadata"]) expect(allowed).toContain(h);
    expect(pre.headers.get("vary")).toContain("Origin");
    expect(pre.headers.get("access-control-allow-credentials")).toBeNull();

    const h0 = await fetch(s.url, { method: "HEAD", headers: { ...tus(s), Origin: APP } });
    expect(h0.status).toBe(200);
    expect(h0.headers.get("access-control-allow-origin")).toBe(APP);
    expect(h0.headers.get("access-control-expose-headers")).toContain("Upload-Offset");
    expect(h0.headers.get("upload-offset")).toBe("0");

    const p = await fetch(s.url, { method: "PATCH", headers: { ...tus(s), Origin: APP, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0" }, body: bytes });
    expect(p.status).toBe(204);
    expect(p.headers.get("access-control-allow-origin")).toBe(APP);
    expect(p.headers.get("upload-offset")).toBe("1000");

    const gp = await preflight(s.url, APP, "GET", "range");
    expect(gp.status).toBe(204);
    expect(gp.headers.get("access-control-allow-origin")).toBe(APP);
    const g = await fetch(s.url, { headers: { Origin: APP, Range: "bytes=10-19" } });
    expect(g.status).toBe(206);
    expect(g.headers.get("access-control-allow-origin")).toBe(APP);
    const exposed = g.headers.get("access-control-expose-headers")!.split(/,\s*/);
    for (const h of ["Content-Range", "Upload-Offset", "Upload-Length", "Tus-Resumable", "Location", "Accept-Ranges"]) expect(exposed).toContain(h);
    expect(g.headers.get("vary")).toContain("Origin");
    expect(Buffer.from(await g.arrayBuffer()).equals(bytes.subarray(10, 20))).toBe(true);

    // A refusal carries the headers too, so the page can read why (here: the wrong offset).
    const late = await fetch(s.url, { method: "PATCH", headers: { ...tus(s), Origin: "https://other.example", "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0" }, body: bytes });
    expect(late.status).toBe(409);
    expect(late.headers.get("access-control-allow-origin")).toBe("https://other.example");
  });

  test("an origin not in the list gets no CORS header; a request without Origin none either, but Vary: Origin", async () => {
    const s = await c.request<Slot>("media.upload", { size: 10 });
    const pre = await preflight(s.url, "https://evil.example", "PATCH", "authorization, tus-resumable");
    expect(pre.headers.get("access-control-allow-origin")).toBeNull();
    expect(pre.headers.get("access-control-allow-headers")).toBeNull();
    const h = await fetch(s.url, { method: "HEAD", headers: { ...tus(s), Origin: "https://evil.example" } });
    expect(h.headers.get("access-control-allow-origin")).toBeNull();
    expect(h.headers.get("access-control-expose-headers")).toBeNull();
    const plain = await fetch(s.url, { method: "HEAD", headers: tus(s) });
    expect(plain.status).toBe(200);
    expect(plain.headers.get("access-control-allow-origin")).toBeNull();
    expect(plain.headers.get("vary")).toContain("Origin");
    // tus discovery (OPTIONS without Access-Control-Request-Method) is answered as before.
    const disc = await fetch(`http://127.0.0.1:${srv.http}/media`, { method: "OPTIONS" });
    expect(disc.status).toBe(204);
    expect(disc.headers.get("tus-version")).toBe("1.0.0");
  });
});

describe("ws.origins empty (the default): any origin", () => {
  test("a preflight and a GET from any origin carry that origin", async () => {
    const srv = await startServer({ args: ["--media-disk-high-water", "100"] });
    try {
      const c = await srv.client(await srv.newDevice("bob"));
      const s = await c.request<Slot>("media.upload", { size: 4 });
      const o = "http://127.0.0.1:1";
      const pre = await preflight(s.url, o, "PATCH", "authorization");
      expect(pre.status).toBe(204);
      expect(pre.headers.get("access-control-allow-origin")).toBe(o);
      const h = await fetch(s.url, { method: "HEAD", headers: { ...tus(s), Origin: o } });
      expect(h.headers.get("access-control-allow-origin")).toBe(o);
      c.close();
    } finally {
      srv.cleanup();
    }
  });
});

/**
 * The HTTPS twin of the HTTP port (http.tls_port, docs/WEBSOCKET.md "TLS on the HTTP port"): the same routes
 * as http.port over TLS with the server's certificate (the development one here, trusted by the test): the web
 * client at /app, /media, the ws.http_path upgrade as wss://, and the loopback rule of /trace and the admin API;
 * and Chromium signing in to /app over https (screenshot test-artefacts/app-https.png).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { collect, dec, freePort } from "../wire/util.ts";
import { wsUrlOf } from "../../src/transport/ws.ts";
import { launchChromium } from "../helpers/chromium.ts";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

let srv: TestServer;
let port: number;
const base = () => `https://127.0.0.1:${port}`;
const get = (path: string, init: RequestInit = {}) => fetch(`${base()}${path}`, { ...init, tls: { ca: srv.ca() } } as RequestInit);

beforeAll(async () => {
  port = await freePort();
  srv = await startServer({ args: ["--http-tls-port", String(port), "--ws-http-path", "/ws"] });
});
afterAll(() => srv?.cleanup());

describe("http.tls_port", () => {
  test("/app, its config and /media are served over HTTPS with the server's certificate; untrusted, the handshake fails", async () => {
    const untrusted = await fetch(`${base()}/healthz`).then((r) => `status ${r.status}`, (e: Error) => e.message);
    expect(untrusted).toMatch(/certificate|self.signed|verify/i);
    const page = await get("/app/");
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<script");
    const js = await get("/app/app.js");
    expect(js.status).toBe(200);
    expect((await js.text()).length).toBeGreaterThan(1000);
    // The page builds wss://<its own host><ws> from this when it is loaded over https (web/app/main.ts).
    expect(await (await get("/app/config.json")).json()).toMatchObject({ ws: "/ws" });
    const tus = await get("/media", { method: "OPTIONS" });
    expect(tus.status).toBe(204);
    expect(tus.headers.get("tus-version")).toBe("1.0.0");
    expect(await (await get("/healthz")).text()).toBe("ok\n");
  });

  test("an SDK client at wss://host:http.tls_port/ws messages a TCP device", async () => {
    const kw = await srv.newDevice("httpsws");
    const kt = await srv.newDevice("httpswsfriend");
    const before = await srv.metric("switchboard_connections_opened_total", '{transport="ws"}');
    const w = await srv.client(kw, { url: `wss://127.0.0.1:${port}/ws`, tls: { ca: srv.ca() } });
    const t = await srv.client(kt);
    const ct = collect(t);
    const s = await w.send("httpswsfriend", "over the HTTPS port");
    await waitFor(() => ct.messages.length === 1, "the message over the HTTPS port's WebSocket");
    expect(ct.messages[0]).toMatchObject({ from: "httpsws", seq: s.seq });
    expect(dec(ct.messages[0]!.payload)).toBe("over the HTTPS port");
    expect(await srv.metric("switchboard_connections_opened_total", '{transport="ws"}')).toBe(before + 1);
    await Promise.all([w.close(), t.close()]);
  });

  test("blob URLs name the HTTPS port; a blob is uploaded (tus PATCH) and downloaded over it", async () => {
    const c = await srv.client(await srv.newDevice("httpsmedia"), { url: `wss://127.0.0.1:${port}/ws`, tls: { ca: srv.ca() } });
    const bytes = crypto.getRandomValues(new Uint8Array(2000));
    const slot = await c.request<{ id: string; url: string; tok: string }>("media.upload", { size: bytes.length });
    // A page over https fetches these: an http:// URL of another host would be mixed content.
    expect(slot.url).toBe(`${base()}/media/${slot.id}`);
    const patch = await get(`/media/${slot.id}`, {
      method: "PATCH",
      headers: { "Tus-Resumable": "1.0.0", Authorization: `Bearer ${slot.tok}`, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0" },
      body: bytes,
    });
    expect(patch.status).toBe(204);
    expect(patch.headers.get("upload-offset")).toBe(String(bytes.length));
    const back = await get(`/media/${slot.id}`);
    expect(back.status).toBe(200);
    expect(new Uint8Array(await back.arrayBuffer())).toEqual(bytes);
    await c.close();
  });

  test("/trace and the admin API answer a loopback peer of the HTTPS listener, as on http.port", async () => {
    expect((await get("/trace")).status).toBe(400); // past the loopback check: it asks for the id
    const status = await get("/admin/status");
    expect(status.status).toBe(200);
  });
});

describe("the web client over https", () => {
  test("Chromium loads https://…/app (the development certificate let through), enrolls, and signs in over wss at /ws", async () => {
    const browser = await launchChromium();
    try {
      // ignoreHTTPSErrors: the CDP form of --ignore-certificate-errors, for this context only.
      const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
      const tab = await ctx.newPage();
      const logs: string[] = [];
      tab.on("console", (m) => logs.push(m.text()));
      tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
      const code = srv.addUser("httpsweb");
      const before = await srv.metric("switchboard_connections_opened_total", '{transport="ws"}');
      await tab.goto(`${base()}/app/`);
      await tab.fill("#account", "httpsweb");
      await tab.fill("#code", code);
      await tab.click("#enroll");
      const text = "signed in as httpsweb · device 1";
      await tab.waitForFunction((t) => (globalThis as any).document.getElementById("status")?.textContent?.includes(t) ?? false, text, { timeout: 20_000 }).catch(async () => {
        throw new Error(`the status line did not say ${JSON.stringify(text)}: it says ${JSON.stringify(await tab.textContent("#status"))}\n${logs.join("\n")}`);
      });
      // The page over https took wss: (web/app/main.ts); a ws:// from an https page would be blocked as mixed content.
      expect(await tab.evaluate(() => (globalThis as any).location.protocol)).toBe("https:");
      expect(await srv.metric("switchboard_connections_opened_total", '{transport="ws"}')).toBeGreaterThan(before);
      mkdirSync(join(ROOT, "test-artefacts"), { recursive: true });
      await tab.screenshot({ path: join(ROOT, "test-artefacts", "app-https.png") });
      await ctx.close();
    } finally {
      await browser.close();
    }
  });
});

describe("wsUrlOf: a cluster's default WebSocket URL (cluster.advertise_ws empty)", () => {
  test("the HTTPS twin's path comes after ws.port and ws.tls_port, before plain http.port", () => {
    expect(wsUrlOf("n1", { https: 5443, http: 5280, path: "/ws" })).toBe("wss://n1:5443/ws");
    expect(wsUrlOf("n1", { https: null, http: 5280, path: "/ws" })).toBe("ws://n1:5280/ws");
    expect(wsUrlOf("n1", { wss: 5291, https: 5443, http: 5280, path: "/ws" })).toBe("wss://n1:5291/");
    expect(wsUrlOf("n1", { https: 5443, http: 5280, path: "" })).toBeNull();
  });
});

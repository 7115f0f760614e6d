/**
 * Local stand-ins for the push services, on real sockets: an HTTP/2 TLS
 * server for APNs (node:http2, the project's dev certificate), plain HTTP
 * servers (Bun.serve) for the OAuth2 token endpoint, FCM, Web Push services
 * and webhook gateways, and TCP servers that accept and then never answer.
 * Each records every request so tests can inspect every byte sent.
 */
import http2 from "node:http2";
import net from "node:net";
import { createDecipheriv, createECDH, createPublicKey, hkdfSync, type KeyObject } from "node:crypto";
import { generateDevCert } from "../../src/transport/devcert.ts";
import { b64url } from "../../src/core/push/jwt.ts";

export interface Recorded {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

export type Reply = { status: number; headers?: Record<string, string>; body?: string };
export type Responder = (r: Recorded) => Reply | Promise<Reply>;

export interface FakeServer {
  url: string;
  requests: Recorded[];
  respond: Responder;
  close(): Promise<void>;
}

export async function startHttp(respond: Responder, port = 0): Promise<FakeServer> {
  const fake: FakeServer = { url: "", requests: [], respond, close: async () => {} };
  const server = Bun.serve({
    port,
    hostname: "127.0.0.1",
    async fetch(req) {
      const u = new URL(req.url);
      const headers: Record<string, string> = {};
      req.headers.forEach((v, k) => (headers[k] = v));
      const rec = { method: req.method, path: u.pathname, headers, body: Buffer.from(await req.arrayBuffer()) };
      fake.requests.push(rec);
      const r = await fake.respond(rec);
      return new Response(r.body ?? "", { status: r.status, headers: r.headers ?? {} });
    },
  });
  fake.url = `http://127.0.0.1:${server.port}`;
  fake.close = async () => void server.stop(true);
  return fake;
}

export async function startApns(respond: Responder): Promise<FakeServer & { ca: string; sessions: number }> {
  const { key, cert } = generateDevCert();
  const fake = { url: "", ca: cert, sessions: 0, requests: [] as Recorded[], respond, close: async () => {} };
  const srv = http2.createSecureServer({ key, cert });
  srv.on("session", () => fake.sessions++);
  srv.on("stream", (stream: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", async () => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(":") && typeof v === "string") headers[k] = v;
      const rec = { method: String(h[":method"]), path: String(h[":path"]), headers, body: Buffer.concat(chunks) };
      fake.requests.push(rec);
      const r = await fake.respond(rec);
      stream.respond({ ":status": r.status, ...(r.headers ?? {}) });
      stream.end(r.body ?? "");
    });
  });
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", () => res()));
  fake.url = `https://localhost:${(srv.address() as net.AddressInfo).port}`;
  fake.close = () => new Promise<void>((res) => srv.close(() => res()));
  return fake;
}

/** A TCP server that accepts connections and never says a byte: a gateway that hangs. */
export async function startHanging(): Promise<{ port: number; accepted: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const h = { port: 0, accepted: 0, close: async () => {} };
  const srv = net.createServer((s) => {
    h.accepted++;
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", () => res()));
  h.port = (srv.address() as net.AddressInfo).port;
  h.close = () => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((res) => srv.close(() => res()));
  };
  return h;
}

/** A port on which nothing listens (bound, then released): connection refused. */
export async function refusedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", () => res()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((res) => srv.close(() => res()));
  return port;
}

/** A P-256 public KeyObject from a 65-byte uncompressed point (a VAPID `k`). */
export function p256PublicKey(point: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: "EC", crv: "P-256", x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33, 65)) }, format: "jwk" });
}

/** A browser's subscription: its key pair and auth secret, and the decryption of what a push service hands it. */
export function subscriber(privateKey?: Buffer, authSecret?: Buffer) {
  const ecdh = createECDH("prime256v1");
  if (privateKey) ecdh.setPrivateKey(privateKey);
  else ecdh.generateKeys();
  const auth = authSecret ?? Buffer.from(crypto.getRandomValues(new Uint8Array(16)));
  const pub = ecdh.getPublicKey();
  return {
    p256dh: b64url(pub),
    auth: b64url(auth),
    /**
     * RFC 8291 §3.4 from the user agent's side, written here independently of
     * src/core/push/webpush.ts (it parses the RFC 8188 header instead of building it).
     */
    decrypt(body: Buffer): Buffer {
      const salt = body.subarray(0, 16);
      const rs = body.readUInt32BE(16);
      const idlen = body[20]!;
      const asPublic = body.subarray(21, 21 + idlen);
      const ct = body.subarray(21 + idlen);
      if (rs < 18 || ct.length > rs) throw new Error(`record size ${rs} vs ciphertext ${ct.length}`);
      const secret = ecdh.computeSecret(asPublic);
      const info = Buffer.concat([Buffer.from("WebPush: info\0"), pub, asPublic]);
      const ikm = Buffer.from(hkdfSync("sha256", secret, auth, info, 32));
      const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
      const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
      const d = createDecipheriv("aes-128-gcm", cek, nonce);
      d.setAuthTag(ct.subarray(ct.length - 16));
      const padded = Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
      let end = padded.length - 1;
      while (end >= 0 && padded[end] === 0) end--;
      if (padded[end] !== 2) throw new Error(`last record must end with delimiter 0x02, got ${padded[end]}`);
      return padded.subarray(0, end);
    },
  };
}

/** An AbortSignal that never fires, for calling a provider directly. */
export const never = new AbortController().signal;

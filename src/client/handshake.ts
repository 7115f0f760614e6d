/**
 * Opening a session: the hello exchange every connection starts with, and
 * the one-shot logins that create a device (enroll with a code, link from an
 * existing device). The long-lived login with a device key is Session's.
 */
import { proofTranscript } from "../protocol/auth.ts";
import { ClientCode, CloseReason } from "../protocol/errors.ts";
import { PROTOCOL_VERSION, type HelloS, type ServerStanza } from "../protocol/stanzas.ts";
import { signProof } from "#node-keys"; // keys.ts; keys-browser.ts in a browser bundle (package.json "imports")
import type { DeviceKey } from "./keys.ts";
import { ClientError, ServerError, type ConnectOptions } from "./types.ts";
import { Wire } from "./wire.ts";
import { isWsUrl, WsWire } from "./wire-ws.ts";

/** The connection under a session: framed TCP/TLS, or WebSocket when ConnectOptions.url is ws(s)://. */
export type AnyWire = Wire | WsWire;

/** How long a connection waits for the server's hello, and then the login for its `ready` (session.ts). */
export const HELLO_TIMEOUT_MS = 10_000;

/** Connects, exchanges hellos, and returns the wire plus the server hello. Used by login, enroll and link. */
export async function handshake(
  o: ConnectOptions,
  onStanza: (s: ServerStanza) => void,
  onClose: (err?: Error) => void,
  ua?: string,
  /** Offer to confirm `sent` frames (hello `sc`, docs/PROTOCOL.md §6.2): only the login session does. */
  confirmSent = false,
  /**
   * The login session's: ask for resumption tickets (hello `tk`, §4.11), a frame to send in the same write as
   * the hello (a `resume`: the login without waiting for the server's hello), and a TLS session to resume.
   */
  login: { tickets?: boolean; sentRides?: boolean; first?: object | null; tlsSession?: Uint8Array | null; onHello?: (h: HelloS, wire: AnyWire) => void } = {},
): Promise<{ wire: AnyWire; hello: HelloS }> {
  let resolveHello!: (h: HelloS) => void;
  let rejectHello!: (e: Error) => void;
  const got = new Promise<HelloS>((res, rej) => ((resolveHello = res), (rejectHello = rej)));
  let phase: "hello" | "open" = "hello";
  const wire = new (isWsUrl(o.url) ? WsWire : Wire)(
    (s) => {
      if (phase === "hello") {
        if (s.t === "hello") {
          phase = "open";
          login.onHello?.(s, wire);
          resolveHello(s);
        } else if (s.t === "err") rejectHello(new ServerError(s.e, s.m));
        else if (s.t === "close") rejectHello(new ServerError(s.r, s.m ?? "closed during hello", s.ra !== undefined ? { retry_ms: s.ra } : undefined));
        return;
      }
      onStanza(s);
    },
    (err) => {
      if (phase === "hello") rejectHello(err ?? new ClientError(ClientCode.CONNECTION_CLOSED, "connection closed during hello"));
      else onClose(err);
    },
  );
  if (wire instanceof Wire) wire.offerTlsSession = login.tlsSession ?? null;
  await wire.open(o);
  const hello: Record<string, unknown> = { t: "hello", v: [PROTOCOL_VERSION] };
  if (ua) hello.ua = ua;
  if (confirmSent) hello.sc = true;
  if (login.tickets) hello.tk = true;
  if (login.sentRides) hello.sr = true; // a `sent` may ride on its own receipt (rcpt {sts}, §6.2); older servers ignore it
  wire.send(hello);
  if (login.first) wire.send(login.first);
  // A server that accepts the connection but never answers must not hang the client: give up and let it reconnect.
  const ms = o.helloTimeoutMs ?? HELLO_TIMEOUT_MS;
  const timer = setTimeout(() => wire.kill(new ClientError(ClientCode.TIMEOUT, `no hello from ${o.url ?? `${o.host}:${o.port}`} within ${ms} ms`)), ms);
  try {
    const hello = await got;
    return { wire, hello };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Where a redirect sends a client connected with `o` (PROTOCOL.md §4.10): the home's host and port, and over
 * WebSocket its `ws` URL (a WebSocket client cannot dial the TCP port: in a browser there is none); a home that
 * names no `ws` keeps the URL we were given, as before.
 */
export function redirectTarget(o: ConnectOptions, s: { host: string; port: number; ws?: string }): Partial<ConnectOptions> {
  return o.url && s.ws ? { host: s.host, port: s.port, url: s.ws } : { host: s.host, port: s.port };
}

/**
 * Waits for `ready` (or an error) after an enroll/link/auth frame, then quits: the caller logs in with the new key.
 * A `redirect` (cluster mode, §4.10) is followed to the account's home node, a few hops at most.
 */
function awaitReady(
  o: ConnectOptions,
  build: (hello: HelloS) => object | Promise<object>,
  onOther?: (s: ServerStanza) => void,
  hops = 0,
): Promise<{ account: string; device: number }> {
  return new Promise((resolve, reject) => {
    let redirect: Partial<ConnectOptions> | null = null;
    let wire: AnyWire | null = null;
    let failure: ServerError | null = null;
    handshake(
      o,
      (s) => {
        if (s.t === "ready") {
          resolve({ account: s.u, device: s.d });
          wire?.send({ t: "close", r: CloseReason.CLIENT_QUIT });
          wire?.end();
        } else if (s.t === "err") failure ??= new ServerError(s.e, s.m, s.x);
        else if (s.t === "redirect") redirect = redirectTarget(o, s);
        else if (s.t === "close" && s.r === CloseReason.REDIRECT && redirect && hops < 3) resolve(awaitReady({ ...o, ...redirect }, build, onOther, hops + 1));
        else if (s.t === "close") reject(failure ?? new ServerError(s.r, s.m ?? "closed"));
        else onOther?.(s);
      },
      (err) => reject(failure ?? err ?? new ClientError(ClientCode.CONNECTION_CLOSED, "connection closed")),
    ).then(async ({ wire: w, hello }) => {
      wire = w;
      w.send(await build(hello));
    }, reject).catch(reject);
  });
}

/**
 * A new device's key as enrollment and linking need it: a node key (keys.ts DeviceKey), or any
 * public key with a signer of its own (a WebCrypto key in a browser: keys-web.ts generateWebDeviceKey).
 */
export type EnrollKey = DeviceKey | { publicKey: Uint8Array; sign(transcript: Uint8Array): Uint8Array | Promise<Uint8Array> };

function signWith(key: EnrollKey, transcript: Uint8Array): Uint8Array | Promise<Uint8Array> {
  return "privateKey" in key ? signProof(key, transcript) : key.sign(transcript);
}

/** Enrolls a new device with a one-time code; returns the key file to keep. */
export async function enrollDevice(o: ConnectOptions & { account: string; code: string; name?: string; key: EnrollKey }): Promise<{ account: string; device: number }> {
  return awaitReady(o, async (h) => ({
    t: "enroll", u: o.account, code: o.code, pk: o.key.publicKey, name: o.name ?? "device",
    sig: await signWith(o.key, proofTranscript("enroll", h.sid, h.nonce, o.account, 0)),
  }));
}

/** Asks to link a new device; `onCode` shows the code to approve from an existing device. Resolves when approved. */
export async function linkDevice(
  o: ConnectOptions & { account: string; name?: string; key: EnrollKey; onCode: (code: string, expires: number) => void },
): Promise<{ account: string; device: number }> {
  return awaitReady(
    o,
    async (h) => ({
      t: "link", u: o.account, pk: o.key.publicKey, name: o.name ?? "device",
      sig: await signWith(o.key, proofTranscript("link", h.sid, h.nonce, o.account, 0)),
    }),
    (s) => {
      if (s.t === "linkcode") o.onCode(s.code, s.exp);
    },
  );
}

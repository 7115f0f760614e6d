/**
 * Helpers shared by the wire tests (not a test file itself): raw logins,
 * ping barriers, frame builders and a collector for SDK clients.
 *
 * A "barrier" is a ping with a fresh `n` followed by waiting for its pong.
 * The server handles a connection's frames in order and pushes deliveries
 * synchronously, so anything the server meant to send before handling the
 * ping arrives before the pong: counting what arrived after a barrier is an
 * ordering argument, not a timing one.
 */
import { Database } from "bun:sqlite";
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { proofTranscript, type ProofPurpose } from "../../src/protocol/auth.ts";
import type { HelloS, MsgS, Rcpt, ServerStanza } from "../../src/protocol/stanzas.ts";
import type { Message, Receipt, SwitchboardClient } from "../../src/client/client.ts";
import { keyFromFile, signProof, type DeviceKey, type KeyFile } from "../../src/client/keys.ts";
import { waitFor, type RawConn, type TestServer, type Transport } from "../helpers/harness.ts";

export const enc = (s: string) => new TextEncoder().encode(s);
export const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** Acceptance records in the shard files (read beside the running server: WAL readers do not block it). */
export function acceptanceRecords(s: Pick<TestServer, "dataDir">): { accepted: number; unconfirmed: number } {
  const dir = join(s.dataDir, "queues");
  const out = { accepted: 0, unconfirmed: 0 };
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".db"))) {
    const db = new Database(join(dir, f), { readonly: true });
    try {
      out.accepted += (db.query("SELECT COUNT(*) AS n FROM accepted").get() as { n: number }).n;
      out.unconfirmed += (db.query("SELECT COUNT(*) AS n FROM unconfirmed").get() as { n: number }).n;
    } finally {
      db.close();
    }
  }
  return out;
}

/** A raw connection logged in as the device of `kf`. */
export async function rawLogin(srv: TestServer, kf: KeyFile, transport: Transport = "tcp"): Promise<RawConn> {
  const c = await srv.raw(transport);
  await c.login(kf);
  return c;
}

let pingN = 1;
/** Ping/pong round trip: everything the server queued for this connection before the ping has arrived when it resolves. */
/** A raw connection that offers to confirm `sent` frames (`hello {sc: true}`, PROTOCOL.md §6.2), logged in; the server's hello must accept. */
export async function confirming(s: TestServer, kf: KeyFile): Promise<RawConn> {
  const c = await s.raw();
  c.send({ t: "hello", v: [1], sc: true });
  c.serverHello = (await c.expect("hello")) as HelloS;
  if (c.serverHello.sc !== true) throw new Error(`the server's hello did not accept sc: ${JSON.stringify(c.serverHello)}`);
  await c.login(kf);
  return c;
}

export async function barrier(c: RawConn): Promise<void> {
  const n = pingN++ % 0xffffffff;
  c.send({ t: "ping", n });
  await c.expect((s) => s.t === "pong" && s.n === n);
}

/** Every `msg` this raw connection received (the `received` log keeps what `expect` consumed too). */
export const msgs = (c: RawConn, pred: (m: MsgS) => boolean = () => true): MsgS[] =>
  c.received.filter((s): s is MsgS => s.t === "msg" && pred(s as MsgS));
export const rcpts = (c: RawConn, pred: (r: Rcpt) => boolean = () => true): Rcpt[] =>
  c.received.filter((s): s is Rcpt => s.t === "rcpt" && pred(s as Rcpt));

/** A `msg` stanza addressing every listed device with a recognisable payload. */
export function msgFrame(id: string, to: string, toDevices: number[], syncDevices: number[] = []): Record<string, unknown> {
  const f: Record<string, unknown> = { t: "msg", id, to, p: toDevices.map((d) => [d, enc(`${id}|${to}|${d}`)]) };
  if (syncDevices.length) f.s = syncDevices.map((d) => [d, enc(`${id}|sync|${d}`)]);
  return f;
}

/** Signs a login proof with the key of `kf` (or another key), for any purpose, server id, nonce, account or device. */
export function proof(key: DeviceKey | KeyFile, purpose: ProofPurpose, sid: string, nonce: Uint8Array, account: string, device: number): Uint8Array {
  const k = "sk" in key ? keyFromFile(key) : key;
  return signProof(k, proofTranscript(purpose, sid, nonce, account, device));
}

/** What an SDK client emitted, in order. */
export interface Collected {
  messages: Message[];
  receipts: Receipt[];
  closes: { reason: string; message?: string; willReconnect: boolean }[];
  errors: Error[];
  readies: number;
}

export function collect(c: SwitchboardClient): Collected {
  const col: Collected = { messages: [], receipts: [], closes: [], errors: [], readies: 0 };
  c.on("message", (m) => col.messages.push(m));
  c.on("receipt", (r) => col.receipts.push(r));
  c.on("close", (x) => col.closes.push(x));
  c.on("error", (e) => col.errors.push(e));
  c.on("ready", () => col.readies++);
  return col;
}

/** A TCP port that was free a moment ago (for tests that must restart a server on the same port). */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port found in 20000-30000");
}

export const randomSig = () => new Uint8Array(randomBytes(64));
export const randomNonce = () => new Uint8Array(randomBytes(32));

/** The last `close` stanza a raw connection received, if any. */
export function closeOf(c: RawConn): Extract<ServerStanza, { t: "close" }> | undefined {
  return c.received.filter((s) => s.t === "close").pop() as Extract<ServerStanza, { t: "close" }> | undefined;
}

/** Waits for the server's close frame and the end of the socket; returns the close reason. */
export async function expectClosedWith(c: RawConn, reason: string): Promise<Extract<ServerStanza, { t: "close" }>> {
  const cl = await c.expect("close");
  if (cl.r !== reason) throw new Error(`expected close ${reason}, got close ${cl.r} (${cl.m ?? ""})`);
  await c.waitClosed();
  return cl;
}

/** Writes all of `bytes`, waiting while the kernel's buffer is full (Bun's write does not buffer). */
export async function writeAll(c: RawConn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) {
    const n = c.sendBytes(bytes.subarray(off));
    if (n < 0) throw new Error("the connection closed during the burst");
    off += n;
    if (off < bytes.length) await Bun.sleep(1);
  }
}

/** One buffer of `frames` end to end, for a burst in one write. */
export function concatFrames(frames: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let o = 0;
  for (const f of frames) (out.set(f, o), (o += f.length));
  return out;
}

/** Waits until the server reports `module` at `version` (a SIGHUP reload done; polling is a bound on waiting, not a timing assertion). */
export async function moduleLoaded(srv: Pick<TestServer, "metric">, module: string, version: string): Promise<void> {
  await waitFor(async () => {
    try {
      return (await srv.metric("switchboard_module_info", `{module="${module}",version="${version}"}`)) === 1;
    } catch {
      return false; // not listed yet
    }
  }, `${module} ${version} to load`);
}

/**
 * The proof that the server relays what it cannot read. Known plaintexts go
 * through a running server on every path (1:1 online and offline, group
 * online and offline, multi-device sync copies), every client connection
 * passing through a capturing TCP proxy in this test. Then: none of those
 * plaintext bytes is in any byte the server received or sent, nor in any
 * file under its data directory (WAL files included) while the offline
 * copies wait there and after the server stops; and every receiving device
 * decrypts the originals.
 *
 * A control makes the test able to fail: one message sent without
 * encryption to an offline device must be found, both in the capture and in
 * the data directory.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:net";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { capturingProxy, filesUnder, type Captured } from "../helpers/capture.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SecureClient, type SecureMessage } from "../../src/client/secure.ts";
import { FrameDecoder } from "../../src/protocol/frame.ts";
import { decodeBody } from "../../src/protocol/codec.ts";

let srv: TestServer;
let dir: string;
let proxy: Server;
let proxyPort = 0;
/** Every byte that crossed the proxy, per connection and direction. */
let streams: Captured[] = [];

beforeAll(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(tmpdir(), "sb-proof-"));
  const p = await capturingProxy(() => srv.tcp);
  proxy = p.server;
  proxyPort = p.port;
  streams = p.streams;
});
afterAll(() => {
  proxy?.close();
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Dev {
  kf: KeyFile;
  c: SwitchboardClient;
  s: SecureClient;
  got: SecureMessage[];
}

/** A device connected through the proxy, with end-to-end encryption (keys published). */
async function secure(kf: KeyFile): Promise<Dev> {
  const c = new SwitchboardClient({ host: "127.0.0.1", port: proxyPort, key: kf });
  const d: Dev = { kf, c, s: await SecureClient.open(c, { statePath: join(dir, `${kf.account}-${kf.device}.e2e`), otkTarget: 10 }), got: [] };
  d.s.on("message", (m) => d.got.push(m));
  await c.connect();
  await d.s.whenPublished();
  return d;
}

/** Every file under the data directory, whole (SQLite databases, WAL and shm files, certificates). */
const dataFiles = () => filesUnder(srv.dataDir);

const captured = () => streams.map((s) => ({ dir: s.dir, bytes: Buffer.concat(s.chunks) }));

/** Where a marker occurs: in which captured streams and which files. */
function findings(marker: Buffer): string[] {
  const where: string[] = [];
  captured().forEach((s, i) => {
    if (s.bytes.includes(marker)) where.push(`proxy stream ${i} (${s.dir === "in" ? "client to server" : "server to client"})`);
  });
  for (const f of dataFiles()) if (f.bytes.includes(marker)) where.push(f.path);
  return where;
}

/** Decodes every frame of every captured stream: the capture is whole, and holds the kinds we expect. */
function frameKinds(): Map<string, number> {
  const kinds = new Map<string, number>();
  for (const s of captured()) {
    const dec = new FrameDecoder(16 * 1024 * 1024);
    dec.feed(new Uint8Array(s.bytes), (body) => {
      const t = `${s.dir}:${(decodeBody(body) as { t: string }).t}`;
      kinds.set(t, (kinds.get(t) ?? 0) + 1);
    });
    expect(dec.pending).toBe(false); // no frame cut off: we captured whole frames only
  }
  return kinds;
}

test("no plaintext in any frame the server receives or sends, nor in any file it writes; every device decrypts the originals", async () => {
  const marker = (path: string) => `plaintext-proof/${path}/${randomBytes(12).toString("hex")}`;
  const plain: Record<string, string> = {
    oneOnline: marker("1to1-online"),
    oneOffline: marker("1to1-offline"),
    groupOnline: marker("group-online"),
    groupOffline: marker("group-offline"),
    fromSecond: marker("1to1-from-second-device"),
  };

  // alice has two devices (sync copies), bob is online, carol and dave go offline after publishing their keys.
  const a1 = await secure(await srv.newDevice("alice"));
  const a2 = await secure(await srv.newDevice("alice"));
  const b = await secure(await srv.newDevice("bob"));
  const kc = await srv.newDevice("carol");
  const kd = await srv.newDevice("dave");
  for (const k of [kc, kd]) {
    const d = await secure(k);
    await d.c.close();
  }
  const { g } = await a1.c.createGroup("proof", ["bob", "dave"]);

  // 1:1 online, with a sync copy to alice's second device; and back from the second device.
  await a1.s.send("bob", plain.oneOnline!);
  await a2.s.send("bob", plain.fromSecond!);
  // 1:1 offline.
  await a1.s.send("carol", plain.oneOffline!);
  // Group: bob and alice's second device online, dave offline.
  await a1.s.send(g, plain.groupOnline!);
  await waitFor(() => b.got.some((m) => m.text === plain.groupOnline), "the group message at bob");
  await a1.s.send(g, plain.groupOffline!);

  // The control: the same path without encryption, to offline carol. It must be found.
  const control = marker("control-unencrypted");
  await a1.c.send("carol", control);

  // While the offline copies wait in the queues (`sent` means committed): nothing but the control is on disk or on the wire.
  for (const [path, text] of Object.entries(plain)) expect({ path, found: findings(Buffer.from(text)) }).toEqual({ path, found: [] });
  const controlFound = findings(Buffer.from(control));
  expect(controlFound.some((w) => w.startsWith("proxy stream"))).toBe(true);
  expect(controlFound.some((w) => w.includes("/queues/"))).toBe(true);

  // The offline devices come back and decrypt what waited for them.
  const c = await secure(kc);
  const d = await secure(kd);
  await waitFor(() => c.got.some((m) => m.text === plain.oneOffline), "carol's offline message");
  await waitFor(() => d.got.some((m) => m.text === plain.groupOffline), "dave's offline group message");

  const texts = (x: Dev): (string | undefined)[] => x.got.map((m) => m.text);
  // bob's copy of the last group message was pushed on its own socket and is emitted after its decryption and state
  // write: alice's `sent` and the waits above do not order it.
  await waitFor(() => texts(b).includes(plain.groupOffline!), "the last group message at bob");
  expect(texts(b)).toEqual([plain.oneOnline, plain.fromSecond, plain.groupOnline, plain.groupOffline]);
  await waitFor(() => texts(a2).includes(plain.groupOffline!), "alice's second device has her sync copies");
  expect(texts(a2)).toEqual([plain.oneOnline, plain.oneOffline, plain.groupOnline, plain.groupOffline]);
  expect(a2.got.every((m) => m.sync)).toBe(true);
  await waitFor(() => texts(a1).includes(plain.fromSecond!), "the sync copy of the second device's message");
  expect(texts(a1)).toEqual([plain.fromSecond]);
  expect(texts(c)).toEqual([plain.oneOffline]); // the control was not encrypted: SecureClient does not pass it off as a message
  expect(texts(d)).toEqual([plain.groupOnline, plain.groupOffline]);

  for (const x of [a1, a2, b, c, d]) await x.c.close();
  await srv.stop(); // checkpoints the WAL into the databases: scan the files once more at rest
  for (const [path, text] of Object.entries(plain)) expect({ path, found: findings(Buffer.from(text)) }).toEqual({ path, found: [] });

  // The capture really holds the traffic: messages in both directions, group messages, acks.
  const kinds = frameKinds();
  for (const k of ["in:msg", "in:gmsg", "in:ack", "out:msg", "out:sent", "out:rcpt"]) expect(kinds.get(k) ?? 0).toBeGreaterThan(0);
});

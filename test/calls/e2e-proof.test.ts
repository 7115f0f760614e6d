/**
 * The capture proof for calls, as test/wire/e2e-proof.test.ts makes it for
 * messages: every client connection passes through a capturing TCP proxy;
 * call payloads (an SDP offer to each of three devices, the answer, ICE both
 * ways) are sealed with the devices' end-to-end sessions (secureCalls over
 * SecureClient), and every device opens the originals. None of the plaintext
 * is in any byte the server received or sent, nor in any file of its data
 * directory. Controls make it able to fail: a payload sent unsealed is found
 * in the capture (and still in no file: signals are never stored).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { callControl } from "../../src/client/calls.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SecureClient } from "../../src/client/secure.ts";
import { secureCalls } from "../../src/client/secure-calls.ts";
import type { CallSignal } from "../../src/client/types.ts";
import { capturingProxy, filesUnder, type Captured } from "../helpers/capture.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";

let srv: TestServer;
let proxy: Awaited<ReturnType<typeof capturingProxy>>;
let dir: string;
const clients: SwitchboardClient[] = [];

beforeAll(async () => {
  srv = await startServer();
  proxy = await capturingProxy(() => srv.tcp);
  dir = mkdtempSync(join(tmpdir(), "sb-callproof-"));
});
afterAll(() => {
  for (const c of clients) c.close();
  proxy?.server.close();
  srv?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

async function device(kf: KeyFile) {
  const c = new SwitchboardClient({ host: "127.0.0.1", port: proxy.port, key: kf });
  const s = await SecureClient.open(c, { statePath: join(dir, `${kf.account}-${kf.device}.e2e`), otkTarget: 10 });
  const signals: CallSignal[] = [];
  const texts: string[] = [];
  c.on("call", (x) => signals.push(x));
  s.on("message", (m) => texts.push(m.text));
  await c.connect();
  await s.whenPublished();
  clients.push(c);
  return { kf, c, s, sc: secureCalls(s), calls: callControl(c), signals, texts };
}
const enc = new TextEncoder();
const dec = new TextDecoder();
const marker = (what: string) => `call-plaintext/${what}/${randomBytes(12).toString("hex")}`;

function findings(m: string): string[] {
  const b = Buffer.from(m);
  const where: string[] = [];
  proxy.streams.forEach((s: Captured, i: number) => {
    if (Buffer.concat(s.chunks).includes(b)) where.push(`proxy stream ${i} (${s.dir})`);
  });
  for (const f of filesUnder(srv.dataDir)) if (f.bytes.includes(b)) where.push(f.path);
  return where;
}

test("sealed call payloads cross the server as ciphertext only, and nothing of a call is stored", async () => {
  const alice = await device(await srv.newDevice("alice"));
  const bob = [await device(await srv.newDevice("bob")), await device(await srv.newDevice("bob")), await device(await srv.newDevice("bob"))];
  // Sessions both ways, as any conversation has them before a call.
  await alice.s.send("bob", "hi");
  await waitFor(() => bob.every((b) => b.texts.includes("hi")), "bob's devices decrypt the message");
  const plain = new Map<number, string>(bob.map((b) => [b.kf.device, marker(`offer-to-${b.kf.device}`)]));
  const id = await alice.calls.call("bob", (d) => alice.sc.seal("bob", d, enc.encode(plain.get(d)!)));
  await waitFor(() => bob.every((b) => b.signals.some((s) => s.kind === "offer" && s.id === id)), "three devices ring");
  for (const b of bob) {
    const o = await b.sc.open(b.signals.find((s) => s.kind === "offer")!);
    expect(o.ok && dec.decode(o.plaintext)).toBe(plain.get(b.kf.device)!);
  }
  const answerText = marker("answer");
  const offer = bob[2]!.signals.find((s) => s.kind === "offer")!;
  bob[2]!.calls.answer(offer, await bob[2]!.sc.seal("alice", alice.kf.device, enc.encode(answerText)));
  await waitFor(() => alice.signals.some((s) => s.kind === "answer"), "the answer");
  const answer = await alice.sc.open(alice.signals.find((s) => s.kind === "answer")!);
  expect(answer.ok && dec.decode(answer.plaintext)).toBe(answerText);
  const iceOut = marker("ice-alice");
  const iceBack = marker("ice-bob");
  alice.calls.ice("bob", id, bob[2]!.kf.device, await alice.sc.seal("bob", bob[2]!.kf.device, enc.encode(iceOut)));
  bob[2]!.calls.ice("alice", id, alice.kf.device, await bob[2]!.sc.seal("alice", alice.kf.device, enc.encode(iceBack)));
  await waitFor(() => alice.signals.some((s) => s.kind === "ice") && bob[2]!.signals.some((s) => s.kind === "ice"), "ice both ways");
  const gotOut = await bob[2]!.sc.open(bob[2]!.signals.find((s) => s.kind === "ice")!);
  const gotBack = await alice.sc.open(alice.signals.find((s) => s.kind === "ice")!);
  expect([gotOut.ok && dec.decode(gotOut.plaintext), gotBack.ok && dec.decode(gotBack.plaintext)]).toEqual([iceOut, iceBack]);
  // The control: one payload unsealed. It must show in the capture (the proof can fail), and in no file.
  const control = marker("control-unsealed");
  alice.calls.hangup("bob", id, bob[2]!.kf.device, enc.encode(control));
  await waitFor(() => bob[2]!.signals.some((s) => s.kind === "hangup"), "the hangup");
  await Bun.sleep(50); // past a group commit of anything queued
  expect(findings(control).some((w) => w.startsWith("proxy stream"))).toBe(true);
  expect(findings(control).filter((w) => !w.startsWith("proxy stream"))).toEqual([]);
  for (const m of [...plain.values(), answerText, iceOut, iceBack]) expect(findings(m)).toEqual([]);
});

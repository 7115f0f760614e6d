import { afterAll, beforeAll, expect, test } from "bun:test";
import { startServer, type TestServer, type Transport } from "../helpers/harness.ts";

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer();
});
afterAll(() => srv.cleanup());

// [alice's transport, bob's]: TCP to TLS, and WebSocket (the browser's; wss: its TLS twin) to either.
const pairs: [Transport, Transport][] = [["tcp", "tls"], ["ws", "ws"], ["ws", "tcp"], ["wss", "ws"]];
for (const [ta, tb] of pairs) test(`a message goes from alice to bob with sent, delivered and read receipts (${ta} to ${tb})`, async () => {
  const a = await srv.client(await srv.newDevice(`alice-${ta}-${tb}`), { transport: ta });
  const b = await srv.client(await srv.newDevice(`bob-${ta}-${tb}`), { transport: tb });
  const got = new Promise<any>((r) => b.on("message", r));
  const dlv = new Promise<any>((r) => a.on("receipt", (x) => x.kind === "dlv" && r(x)));
  const read = new Promise<any>((r) => a.on("receipt", (x) => x.kind === "read" && r(x)));
  const sent = await a.send(`bob-${ta}-${tb}`, "hi bob");
  const m = await got;
  expect(new TextDecoder().decode(m.payload)).toBe("hi bob");
  expect(m.seq).toBe(sent.seq);
  expect((await dlv).seq).toBe(sent.seq);
  b.markRead(`alice-${ta}-${tb}`, m.seq);
  expect((await read).seq).toBe(sent.seq);
  await a.close();
  await b.close();
});

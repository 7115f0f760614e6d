/**
 * A client's messages leave in the order its application sent them, also
 * when many are sent at once to peers whose device lists (and, end to end,
 * sessions) the client does not know yet. The SDK used to await a device
 * lookup per send, and whichever lookup resolved first transmitted first:
 * with the server answering requests over several event-loop turns (its
 * inbound pacing), 3 of 150 messages overtook 128 others
 * (test/wire/flow.test.ts, "reads late"). The same held for SecureClient's
 * session set-up.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { SecureClient, type SecureMessage } from "../../src/client/secure.ts";
import type { KeyFile } from "../../src/client/keys.ts";

let srv: TestServer;
let dir: string;
beforeAll(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(tmpdir(), "sb-order-"));
});
afterAll(() => {
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// Four rounds with new accounts each: whether a lookup used to overtake another depended on how the server's
// turns fell, so one round caught it only now and then (1 run in 5 before the SDK kept sends in a queue).
for (const round of [1, 2, 3, 4]) test(`1:1 sends made in one go to peers the client has not looked up yet arrive in send order, on every device (round ${round})`, async () => {
  const a1 = await srv.newDevice(`ord-alice${round}`);
  await srv.newDevice(`ord-alice${round}`); // a second device of the sender: every send also needs her own list
  const peers = [`ord-bob${round}`, `ord-carol${round}`];
  const got = new Map<string, string[][]>();
  const receivers: SwitchboardClient[] = [];
  for (const p of peers) {
    const lists: string[][] = [];
    got.set(p, lists);
    for (let d = 0; d < 2; d++) {
      const k = await srv.newDevice(p);
      const list: string[] = [];
      lists.push(list);
      receivers.push(await srv.client(k, { setup: (c) => c.on("message", (m) => list.push(m.id)) }));
    }
  }
  const alice = await srv.client(a1);
  const N = 300;
  const sends: Promise<unknown>[] = [];
  // Interleaved over two unknown peers, all before the first lookup can answer.
  for (let i = 0; i < N; i++) sends.push(alice.send(peers[i % 2]!, new TextEncoder().encode(`m${i}`), { id: `o${i}` }));
  await Promise.all(sends);
  for (const [p, lists] of got) {
    const want = Array.from({ length: N }, (_, i) => i).filter((i) => peers[i % 2] === p).map((i) => `o${i}`);
    await waitFor(() => lists.every((l) => l.length >= want.length), `${p}'s devices to get ${want.length}`, 60_000);
    for (const l of lists) expect(l).toEqual(want);
  }
  await alice.close();
  for (const r of receivers) await r.close();
}, 120_000);

async function secure(kf: KeyFile, got: SecureMessage[]): Promise<{ c: SwitchboardClient; s: SecureClient }> {
  let s!: SecureClient;
  const c = await srv.client(kf, {
    setup: async (c) => {
      s = await SecureClient.open(c, { statePath: join(dir, `${kf.account}-${kf.device}.e2e`), otkTarget: 20 });
      s.on("message", (m) => got.push(m));
    },
  });
  await s.whenPublished();
  return { c, s };
}

test("end to end: sends made in one go, before any session exists, arrive in send order", async () => {
  const bobGot: SecureMessage[] = [], bob2Got: SecureMessage[] = [], carolGot: SecureMessage[] = [], none: SecureMessage[] = [];
  const a = await secure(await srv.newDevice("ord-e2e-alice"), none);
  const b1 = await secure(await srv.newDevice("ord-e2e-bob"), bobGot);
  const b2 = await secure(await srv.newDevice("ord-e2e-bob"), bob2Got);
  const c1 = await secure(await srv.newDevice("ord-e2e-carol"), carolGot);
  const N = 40;
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) sends.push(a.s.send(i % 3 === 2 ? "ord-e2e-carol" : "ord-e2e-bob", `t${i}`));
  await Promise.all(sends);
  const toBob = Array.from({ length: N }, (_, i) => i).filter((i) => i % 3 !== 2).map((i) => `t${i}`);
  const toCarol = Array.from({ length: N }, (_, i) => i).filter((i) => i % 3 === 2).map((i) => `t${i}`);
  await waitFor(() => bobGot.length >= toBob.length && bob2Got.length >= toBob.length && carolGot.length >= toCarol.length, "every message decrypted", 60_000);
  expect(bobGot.map((m) => m.text)).toEqual(toBob);
  expect(bob2Got.map((m) => m.text)).toEqual(toBob);
  expect(carolGot.map((m) => m.text)).toEqual(toCarol);
  for (const d of [a, b1, b2, c1]) await d.c.close();
}, 120_000);

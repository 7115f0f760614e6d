/**
 * The SDK's recipient-side dedup over a real server (src/client/dedup.ts, docs/PROTOCOL.md §6.3): a sender's
 * resend that the server accepts anew (here: a confirming client reusing, after a restart, an id it confirmed,
 * which the server no longer recognises, §6.2; the same second copy a crash in the commit window causes) is dropped even after a flood
 * of more than 10 000 messages in another conversation (the old global FIFO of 10 000 forgot it), and a redelivery
 * after a reconnect is dropped as before. The state stays within its bound, by count.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { Message } from "../../src/client/client.ts";
import { PER_CONVERSATION, RECENT } from "../../src/client/dedup.ts";
import { barrier, confirming, freePort } from "./util.ts";

let srv: TestServer;
beforeAll(async () => {
  const base = await freePort(); // fixed ports: the SDK reconnects to the restarted server
  srv = await startServer({ args: ["--tcp-port", String(base), "--http-port", String(base + 1), "--tls-port", "-1"] });
});
afterAll(() => srv?.cleanup());

const p = new Uint8Array([1, 2, 3]);


test("a resend accepted anew is dropped after a flood of 10 001 messages in another conversation", async () => {
  const bob = await srv.newDevice("dd-bob");
  const got: Message[] = [];
  const rb = await srv.client(bob, { setup: (c) => c.on("message", (m) => got.push(m)) });

  const carolKey = await srv.newDevice("dd-carol");
  let carol = await confirming(srv, carolKey);
  carol.send({ t: "msg", id: "k1", to: "dd-bob", p: [[bob.device, p]] });
  const first = await carol.expect("sent");
  await waitFor(() => got.length === 1, "bob got carol's message");

  const alice = await srv.raw();
  await alice.login(await srv.newDevice("dd-alice"));
  const FLOOD = 10_001;
  for (let i = 0; i < FLOOD; i += 500) {
    const n = Math.min(500, FLOOD - i);
    for (let j = 0; j < n; j++) alice.send({ t: "msg", id: `a${i + j}`, to: "dd-bob", p: [[bob.device, p]] });
    for (let j = 0; j < n; j++) await alice.expect("sent");
  }
  await waitFor(() => got.length === 1 + FLOOD, "bob got the flood", 60_000);

  // Carol confirms her sent, so no record of it is kept; after a restart (the in-memory front gone) she reuses
  // the id: the server accepts it anew, with a new seq, and bob's SDK gets a second copy of (dd-carol, device, k1).
  carol.send({ t: "ack", sc: 1 });
  await barrier(carol);
  expect(await srv.stop()).toBe(0);
  await srv.restart();
  carol = await confirming(srv, carolKey);
  carol.send({ t: "msg", id: "k1", to: "dd-bob", p: [[bob.device, p]] });
  const again = await carol.expect("sent");
  expect(again.seq).not.toBe(first.seq); // accepted anew: the server did not recognise it
  await waitFor(() => rb.duplicatesDropped === 1 || got.length > 1 + FLOOD, "the second copy reached bob's SDK");
  expect(got.filter((m) => m.from === "dd-carol").map((m) => m.id)).toEqual(["k1"]);
  expect(rb.duplicatesDropped).toBe(1);
  // The bound, by count: alice's conversation holds its window, carol's its one key, and the recent window is full.
  expect(rb.dedupState).toEqual({ conversations: 2, keys: RECENT + PER_CONVERSATION + 1 });
  alice.end();
  carol.end();
  await rb.close();
});

test("a delivery handled but not acknowledged before the connection dropped is redelivered and dropped", async () => {
  const bob = await srv.newDevice("dr-bob");
  const got: Message[] = [];
  let readies = 0;
  const rb = await srv.client(bob, {
    setup: (c) => {
      c.on("ready", () => readies++);
      c.on("message", (m) => {
        got.push(m);
        if (got.length === 1) c.dropConnection(); // handled, and its ack never sent on that connection
      });
    },
  });
  const carol = await srv.raw();
  await carol.login(await srv.newDevice("dr-carol"));
  carol.send({ t: "msg", id: "m1", to: "dr-bob", p: [[bob.device, p]] });
  await carol.expect("sent");
  await waitFor(() => readies === 2, "the reconnect");
  await waitFor(() => rb.duplicatesDropped === 1 || got.length > 1, "the redelivery");
  carol.send({ t: "msg", id: "m2", to: "dr-bob", p: [[bob.device, p]] }); // after whatever the server redelivers
  await waitFor(() => got.some((m) => m.id === "m2"), "the second message");
  expect(got.map((m) => m.id)).toEqual(["m1", "m2"]);
  expect(rb.duplicatesDropped).toBe(1);
  carol.end();
  await rb.close();
});

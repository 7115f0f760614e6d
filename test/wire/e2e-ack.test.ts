/**
 * SecureClient's crypto is asynchronous, so its ack must wait: a message is
 * acknowledged only once its decryption's new ratchet state is stored
 * (SwitchboardClient.holdAck). Shown against a real server with the state in
 * a real StateStorage (fileStorage) whose writes a gate can hold back or make
 * fail: while bob's save waits, his connection drops; the server has no ack,
 * so it redelivers the message on the next connection; once the save goes
 * through, it is acked (a later reconnect brings nothing back), and bob saw
 * it once. A save that fails leaves the message unacknowledged until a later
 * save succeeds. Over TCP and over WebSocket.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { SecureClient, type SecureMessage } from "../../src/client/secure.ts";
import { fileStorage } from "../../src/client/storage-file.ts";
import type { StateStorage } from "../../src/client/storage.ts";

let srv: TestServer;
let dir: string;
beforeAll(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(tmpdir(), "sb-e2e-ack-"));
});
afterAll(() => {
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** fileStorage with a gate: while closed, saves wait (counted in `waiting`); `failNext` saves fail (an I/O error). */
function gated(base: StateStorage) {
  let open: (() => void) | null = null;
  let gate: Promise<void> | null = null;
  const g = {
    waiting: 0,
    failNext: 0,
    close() {
      gate = new Promise((r) => (open = r));
    },
    open() {
      gate = null;
      open?.();
    },
    storage: {
      name: `gated ${base.name}`,
      load: (k: string) => base.load(k),
      async save(k: string, b: Uint8Array) {
        if (g.failNext > 0) {
          g.failNext--;
          throw new Error("EIO: the test's storage failed this write");
        }
        if (gate) {
          g.waiting++;
          await gate;
          g.waiting--;
        }
        return base.save(k, b);
      },
      remove: (k: string) => base.remove(k),
    } satisfies StateStorage,
  };
  return g;
}

for (const transport of ["tcp", "ws"] as const) {
  describe(`over ${transport}`, () => {
    test("a message is acked only once its new ratchet state is stored", async () => {
      const kfA = await srv.newDevice(`alice${transport}`), kfB = await srv.newDevice(`bob${transport}`);
      const clients: SwitchboardClient[] = [];
      try {
        let alice!: SecureClient;
        const ca = await srv.client(kfA, { transport, setup: async (c) => void (alice = await SecureClient.open(c, { storage: fileStorage(dir), stateKey: `${kfA.account}.e2e` })) });
        clients.push(ca);
        const g = gated(fileStorage(dir));
        const got: SecureMessage[] = [];
        const raw: string[] = [];
        let bob!: SecureClient;
        const cb = await srv.client(kfB, {
          transport,
          setup: async (c) => {
            c.on("message", (m) => raw.push(m.id));
            bob = await SecureClient.open(c, { storage: g.storage, stateKey: `${kfB.account}.e2e` });
            bob.on("message", (m) => got.push(m));
          },
        });
        clients.push(cb);
        await Promise.all([alice.whenPublished(), bob.whenPublished()]);
        const s1 = await alice.send(kfB.account, "one");
        await waitFor(() => got.length === 1, "the first message");

        g.close();
        const s2 = await alice.send(kfB.account, "two");
        await waitFor(() => g.waiting > 0, "bob's save of the second message's state, held");
        cb.dropConnection();
        await waitFor(() => raw.filter((id) => id === s2.id).length === 2, "the redelivery of the unacknowledged message on the next connection");
        g.open();
        await waitFor(() => g.waiting === 0 && got.length === 2, "the second message's state stored");
        expect(got.map((m) => m.text)).toEqual(["one", "two"]); // once: the redelivery is a duplicate to the ratchet

        // Now acknowledged: a new connection brings nothing back, and both messages stay seen once.
        await cb.request("keys.count"); // a round trip behind the ack on the same connection: the server has it
        cb.dropConnection();
        await waitFor(() => cb.isReady, "bob reconnected");
        const s3 = await alice.send(kfB.account, "three");
        await waitFor(() => got.length === 3, "a third message");
        expect(got.map((m) => m.text)).toEqual(["one", "two", "three"]);
        expect(raw.filter((id) => id === s1.id)).toHaveLength(1);
        expect(raw.filter((id) => id === s2.id)).toHaveLength(2);
        expect(raw.filter((id) => id === s3.id)).toHaveLength(1);

        // A save that fails: the message is seen, not acknowledged (an error event says why); its redelivery is
        // acknowledged once a save succeeds, and it is not seen twice.
        const errors: Error[] = [];
        bob.on("error", (e) => errors.push(e));
        g.failNext = 1;
        const s4 = await alice.send(kfB.account, "four");
        await waitFor(() => errors.length === 1, "the failed save reported");
        expect(errors[0]!.message).toContain("EIO");
        expect(got.map((m) => m.text)).toEqual(["one", "two", "three", "four"]);
        await cb.request("keys.count");
        cb.dropConnection();
        await waitFor(() => raw.filter((id) => id === s4.id).length === 2, "the unacknowledged message redelivered");
        await waitFor(() => cb.isReady, "bob reconnected");
        await cb.request("keys.count"); // behind the redelivery's ack, now that a save succeeded
        cb.dropConnection();
        const s5 = await alice.send(kfB.account, "five");
        await waitFor(() => got.length === 5, "a fifth message");
        expect(got.map((m) => m.text)).toEqual(["one", "two", "three", "four", "five"]);
        expect(raw.filter((id) => id === s4.id)).toHaveLength(2);
        expect(raw.filter((id) => id === s5.id)).toHaveLength(1);
        // The state bob stored opens the conversation where it was: a fresh SecureClient on it decrypts the next one.
        expect((await fileStorage(dir).load(`${kfB.account}.e2e`))!.length).toBeGreaterThan(0);
      } finally {
        for (const c of clients) await c.close();
      }
    });
  });
}

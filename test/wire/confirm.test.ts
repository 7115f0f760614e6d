/**
 * Bounded dedup state (issue 20 target 5, docs/PROTOCOL.md §6.2 "Confirming sent"): a client that confirms the
 * `sent` frames it holds (`hello {sc: true}`, then `ack {sc: n}`) leaves no acceptance record behind once it has
 * confirmed; one it has not confirmed is written after a commit window and answers a resend after kill -9; it
 * expires after queue.dedup_ttl; a client that does not confirm keeps today's record for the retention; and when
 * the server is killed between a `sent` and its confirmation, before the record was written, the SDK's resend is
 * accepted anew and the recipient's app still sees the message once.
 */
import type { Socket, TCPSocketListener } from "bun";
import { afterAll, afterEach, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { SwitchboardClient, type Message } from "../../src/client/client.ts";
import { acceptanceRecords, barrier, confirming, freePort } from "./util.ts";

const servers: TestServer[] = [];
const clients: SwitchboardClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
});
afterAll(() => servers.forEach((s) => s.cleanup()));

// The canary is off: it is a confirming SDK client of the same server, and a round of it in flight at a stop or a
// kill -9 under load leaves an unconfirmed record of its own in the shard files these tests count.
async function server(args: string[] = []): Promise<TestServer> {
  const s = await startServer({ args: ["--canary-interval", "0", ...args] });
  servers.push(s);
  return s;
}



const p = new Uint8Array([7, 7, 7]);

/** Alice on a confirming raw connection, and bob online with an SDK client that acks (every copy a write-back hit). */
async function confirmingToBob(s: TestServer) {
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const rb = await s.client(bob);
  clients.push(rb);
  return { bob, a: await confirming(s, alice) };
}

test("confirmed sents leave no record; an old client's records stay for the retention", async () => {
  const s = await server();
  const alice = await s.newDevice("alice");
  const carol = await s.newDevice("carol");
  const bob = await s.newDevice("bob");
  const rb = await s.client(bob); // online and acking: every copy is a write-back hit
  clients.push(rb);
  const got: Message[] = [];
  rb.on("message", (m) => got.push(m));

  const a = await confirming(s, alice);
  for (let i = 0; i < 50; i++) a.send({ t: "msg", id: `a${i}`, to: "bob", p: [[bob.device, p]] });
  for (let i = 0; i < 50; i++) await a.expect("sent");
  a.send({ t: "ack", sc: 50 });
  await barrier(a);
  expect(await s.metric("switchboard_dedup_released_total")).toBe(50);

  const old = await s.raw(); // a client from before the confirmation: plain hello, no sc
  expect((await old.hello()).sc).toBeUndefined();
  await old.login(carol);
  for (let i = 0; i < 50; i++) old.send({ t: "msg", id: `c${i}`, to: "bob", p: [[bob.device, p]] });
  for (let i = 0; i < 50; i++) await old.expect("sent");
  old.send({ t: "ack", sc: 50 }); // ignored: this connection did not offer to confirm
  await barrier(old);
  expect(await s.metric("switchboard_dedup_released_total")).toBe(50);
  await waitFor(() => got.length === 100, "bob got all 100");

  // A clean stop commits everything still waiting: an unconfirmed record would be written now.
  expect(await s.stop()).toBe(0);
  expect(acceptanceRecords(s)).toEqual({ accepted: 50, unconfirmed: 0 });
});

test("the SDK confirms every sent it holds: one release per message, no record left", async () => {
  const s = await server();
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const rb = await s.client(bob);
  clients.push(rb);
  const got: Message[] = [];
  rb.on("message", (m) => got.push(m));
  const sa = await s.client(alice);
  clients.push(sa);
  // Sequential and then a burst: a confirmation alone (nothing else to ack) and several on one ack.
  for (let i = 0; i < 5; i++) await sa.send("bob", `one ${i}`);
  await Promise.all(Array.from({ length: 40 }, (_, i) => sa.send("bob", `burst ${i}`)));
  await waitFor(async () => (await s.metric("switchboard_dedup_released_total")) === 45, "45 sents confirmed");
  expect(got.length).toBe(45);
  expect(await s.stop()).toBe(0);
  expect(acceptanceRecords(s)).toEqual({ accepted: 0, unconfirmed: 0 });
});

test("an unconfirmed record is written after a window, answers a resend after kill -9, and goes when confirmed", async () => {
  const base = await freePort();
  const s = await server(["--tcp-port", String(base), "--http-port", String(base + 1), "--tls-port", "-1"]);
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const rb = await s.raw();
  await rb.login(bob);

  const a = await confirming(s, alice);
  a.send({ t: "msg", id: "m1", to: "bob", p: [[bob.device, p]] });
  const m = await rb.expect("msg");
  rb.send({ t: "ack", q: [m.q] });
  const first = await a.expect("sent"); // not confirmed
  await waitFor(async () => (await s.metric("switchboard_dedup_unconfirmed_records")) === 1, "the record written unconfirmed");
  // A count beyond what this connection was sent is refused, and changes nothing.
  a.send({ t: "ack", sc: 2 });
  expect(await a.expect("err")).toMatchObject({ e: "bad_field" });

  await s.kill9();
  await s.restart();
  expect(acceptanceRecords(s)).toEqual({ accepted: 0, unconfirmed: 1 });
  const a2 = await confirming(s, alice);
  a2.send({ t: "msg", id: "m1", to: "bob", p: [[bob.device, p]] });
  const again = await a2.expect("sent");
  expect(again).toMatchObject({ id: "m1", seq: first.seq, ts: first.ts });
  a2.send({ t: "ack", sc: 1 });
  await waitFor(async () => (await s.metric("switchboard_dedup_unconfirmed_records")) === 0, "the record deleted once confirmed");
  expect(await s.stop()).toBe(0);
  expect(acceptanceRecords(s)).toEqual({ accepted: 0, unconfirmed: 0 });

  // Bob got it once: the resend was answered from the record.
  await s.restart();
  const rb2 = await s.raw();
  await rb2.login(bob);
  await barrier(rb2);
  expect(rb.received.filter((x) => x.t === "msg").length + rb2.received.filter((x) => x.t === "msg").length).toBe(1);
});

test("the sweep gives a sent log back only once all of it is confirmed, and later sents count on from there", async () => {
  // The auth timeout at 1 s marks a sweep that ran after the confirmation (Conn.release runs in every sweep).
  const s = await server(["--timeouts-auth", "1", "--timeouts-sweep", "1"]);
  const { bob, a } = await confirmingToBob(s);
  for (let i = 0; i < 5; i++) a.send({ t: "msg", id: `r${i}`, to: "bob", p: [[bob.device, p]] });
  for (let i = 0; i < 5; i++) await a.expect("sent");
  a.send({ t: "ack", sc: 3 }); // two still unconfirmed: the sweep must keep them
  await barrier(a);
  const marker = await s.raw(); // opened after the confirmation, never says hello: closed by a later sweep
  await marker.waitClosed();
  a.send({ t: "ack", sc: 5 });
  await barrier(a);
  await (await s.raw()).waitClosed(); // and a sweep after this one, which gives the log back

  for (let i = 5; i < 10; i++) a.send({ t: "msg", id: `r${i}`, to: "bob", p: [[bob.device, p]] });
  for (let i = 5; i < 10; i++) await a.expect("sent");
  a.send({ t: "ack", sc: 11 }); // one more than this connection was sent, across the given-back log
  expect(await a.expect("err")).toMatchObject({ e: "bad_field" });
  a.send({ t: "ack", sc: 10 });
  await barrier(a);
  expect(a.received.filter((x) => x.t === "err").length).toBe(1);
  expect(await s.stop()).toBe(0);
  expect(acceptanceRecords(s)).toEqual({ accepted: 0, unconfirmed: 0 });
});

test("a record never confirmed expires after queue.dedup_ttl", async () => {
  const s = await server(["--queue-dedup-ttl", "1", "--queue-expire-every", "1"]);
  const { bob, a } = await confirmingToBob(s);
  a.send({ t: "msg", id: "ttl", to: "bob", p: [[bob.device, p]] });
  await a.expect("sent");
  await waitFor(async () => (await s.metric("switchboard_dedup_unconfirmed_records")) === 1, "the record written unconfirmed");
  await waitFor(async () => (await s.metric("switchboard_dedup_unconfirmed_records")) === 0, "the record expired");
  expect(await s.stop()).toBe(0);
  expect(acceptanceRecords(s).unconfirmed).toBe(0);
});

/**
 * A TCP proxy for one client: forwards both ways, except that while `hold` is set what the server writes is kept
 * back (the client never reads it); it is dropped when the server side closes, as a crash loses it.
 */
class HoldingProxy {
  hold = false;
  held = 0;
  private listener: TCPSocketListener<undefined> | null = null;
  /** Per client socket: its server-side socket once connected, and what the client wrote before that. */
  private links = new Map<Socket<undefined>, { up: Socket<undefined> | null; pend: Uint8Array[] }>();
  port = 0;

  async start(upstream: () => number): Promise<void> {
    const self = this;
    const listener = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        binaryType: "uint8array",
        open(down) {
          const link = { up: null as Socket<undefined> | null, pend: [] as Uint8Array[] };
          self.links.set(down, link);
          void Bun.connect({
            hostname: "127.0.0.1",
            port: upstream(),
            socket: {
              binaryType: "uint8array",
              data(_up, chunk: Uint8Array) {
                if (self.hold) self.held += chunk.length;
                else down.write(chunk);
              },
              close() {
                down.end();
              },
              error() {},
            },
          }).then(
            (up) => {
              link.up = up;
              for (const c of link.pend.splice(0)) up.write(c);
            },
            () => down.end(),
          );
        },
        data(down, chunk: Uint8Array) {
          const link = self.links.get(down)!;
          if (link.up) link.up.write(chunk);
          else link.pend.push(chunk.slice());
        },
        close(down) {
          self.links.get(down)?.up?.end();
          self.links.delete(down);
        },
        error() {},
      },
    });
    this.listener = listener;
    this.port = listener.port;
  }

  stop(): void {
    this.listener?.stop(true);
  }
}

test("kill -9 between a sent and its confirmation, before the record was written: the SDK resends, the app sees it once", async () => {
  const base = await freePort();
  // A long commit window: the record of a message whose copies were all acknowledged waits a whole window for the
  // confirmation before it is written, so the kill below comes while it is in memory only.
  const args = ["--tcp-port", String(base), "--http-port", String(base + 1), "--tls-port", "-1", "--queue-commit-ms", "1000"];
  const s = await server(args);
  const alice = await s.newDevice("alice");
  const bob = await s.newDevice("bob");
  const got: Message[] = [];
  const rb = await s.client(bob, { setup: (c) => c.on("message", (m) => got.push(m)) });
  clients.push(rb);

  const proxy = new HoldingProxy();
  await proxy.start(() => s.tcp);
  const sender = new SwitchboardClient({ host: "127.0.0.1", port: proxy.port, key: alice });
  clients.push(sender);
  await sender.connect();
  await sender.devices("bob"); // the device lists are cached: the send needs no answer that the proxy would hold
  await sender.devices("alice");
  proxy.hold = true;

  const sent = sender.send("bob", "once only", { id: "k1" });
  await waitFor(() => got.length === 1, "bob's app got the message");
  await waitFor(() => proxy.held > 0, "the server wrote the sent (held back by the proxy)");
  expect(await s.metric("switchboard_dedup_unconfirmed_records")).toBe(0);
  await s.kill9();
  proxy.hold = false;
  await s.restart();

  // The sender never saw `sent`: it resends on its next connection, and the server, with no record, accepts it anew.
  const r = await sent;
  expect(r.id).toBe("k1");
  await waitFor(() => rb.duplicatesDropped === 1, "the second copy reached bob's SDK");
  expect(r.seq).not.toBe(got[0]!.seq); // accepted anew: proof that the record was gone
  await barrier(await (async () => {
    const c = await s.raw();
    await c.login(await s.newDevice("zed"));
    return c;
  })());
  expect(got.map((m) => m.id)).toEqual(["k1"]);
  proxy.stop();
});

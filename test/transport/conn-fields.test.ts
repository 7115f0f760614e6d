/**
 * Conn keeps its flags, state, transport, close reason and error count packed in one number, and what only a login
 * needs in an object dropped at login (src/transport/connection.ts: 160 B per connection instead of 320). Each
 * accessor must read back what was set, whatever the others hold: a random walk over them against plain fields.
 */
import type { Socket, TCPSocketListener } from "bun";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { CLOSE_REASONS } from "../../src/protocol/errors.ts";
import { Conn, ConnState, ERRORS_MAX, type ConnShared, type Transport } from "../../src/transport/connection.ts";

let listener: TCPSocketListener<undefined>;
let client: Socket<undefined>;
let accepted: Socket<undefined>;
beforeAll(async () => {
  let got!: (s: Socket<undefined>) => void;
  const open = new Promise<Socket<undefined>>((r) => (got = r));
  listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => got(s), data() {} } });
  client = await Bun.connect({ hostname: "127.0.0.1", port: listener.port, socket: { data() {} } });
  accepted = await open;
});
afterAll(() => {
  client.end();
  listener.stop(true);
});

const closes: string[] = [];
const shared: ConnShared = { maxFrame: 65536, outboundLimit: 1 << 20, onClosed: (_c, r) => closes.push(r), onOutBytes() {}, onOutFrame() {} };

const FLAGS = ["rx", "tickets", "behind", "paused", "sentRides", "flushQueued", "confirms", "ackAhead"] as const;
const STATES = Object.values(ConnState);

test("every packed field reads back what was set, whatever the others hold (random walk)", () => {
  const seed = Number(process.env.SEED ?? Math.floor(Math.random() * 2 ** 31));
  let x = seed;
  const rnd = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) % n);
  try {
    for (const transport of ["tcp", "tls", "ws"] as Transport[]) {
      const c = new Conn(accepted, transport, shared, 1000);
      const model: Record<string, unknown> = { state: ConnState.HELLO, errors: 0, rx: true, tickets: false, behind: false, paused: false, sentRides: false, flushQueued: false, confirms: false, ackAhead: false };
      for (let step = 0; step < 5000; step++) {
        const k = rnd(3);
        if (k === 0) {
          const f = FLAGS[rnd(FLAGS.length)]!;
          const v = rnd(2) === 1;
          (c as unknown as Record<string, boolean>)[f] = v;
          model[f] = v;
        } else if (k === 1) {
          const s = STATES[rnd(STATES.length - 1)]!; // never CLOSED: closing is checked below
          c.state = s;
          model.state = s;
        } else {
          // Up to the top of the count, where the packed number's sign bit is in use.
          const n = rnd(4) === 0 ? ERRORS_MAX - rnd(3) : rnd(200);
          c.errors = n;
          model.errors = n;
        }
        for (const [f, v] of Object.entries(model)) expect([f, (c as unknown as Record<string, unknown>)[f]]).toEqual([f, v]);
        expect(c.transport).toBe(transport);
        expect(c.closeReason).toBeNull();
      }
      c.errors = ERRORS_MAX + 5;
      expect(c.errors).toBe(ERRORS_MAX); // saturates: limits.error_budget is at most ERRORS_MAX - 1, so the budget still closes
    }
  } catch (e) {
    console.error(`conn-fields random walk: SEED=${seed}`);
    throw e;
  }
});

test("each close reason is kept, with the flags and the transport untouched", () => {
  for (const reason of CLOSE_REASONS) {
    const c = new Conn(accepted, "ws", shared, 1000);
    c.tickets = true;
    c.errors = 7;
    c.closed(reason);
    expect([c.closeReason, c.state, c.transport, c.tickets, c.rx, c.errors]).toEqual([reason, ConnState.CLOSED, "ws", true, true, 7]);
    c.closed(CLOSE_REASONS[0] === reason ? CLOSE_REASONS[1]! : CLOSE_REASONS[0]!); // idempotent: the first reason wins
    expect(c.closeReason).toBe(reason);
  }
  expect(closes).toEqual([...CLOSE_REASONS]);
});

test("what only a login needs is kept until loggedIn() and gone after", () => {
  const c = new Conn(accepted, "tcp", shared, 1234);
  expect([c.openedAt, c.nonce, c.link]).toEqual([1234, null, null]);
  const nonce = new Uint8Array(32).fill(9);
  c.nonce = nonce;
  c.link = { code: "ABCD", pk: new Uint8Array(32), name: "phone", expires: 99 };
  expect(c.nonce).toBe(nonce);
  expect(c.link?.code).toBe("ABCD");
  expect(c.openedAt).toBe(1234);
  c.loggedIn();
  expect([c.openedAt, c.nonce, c.link, c.maxFrame] as unknown[]).toEqual([0, null, null, 65536]);
});

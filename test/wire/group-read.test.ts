/**
 * Group read marks (PROTOCOL.md §6.5, §6.8): forward only, and kept across a
 * restart (kill -9 included) by their one owner, the groups module's store. A `read` at or
 * below the mark tells no one, also after the server restarted.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, type TestServer } from "../helpers/harness.ts";
import type { Res, Rcpt, Sent } from "../../src/protocol/stanzas.ts";
import { barrier, enc, rawLogin } from "./util.ts";

let srv: TestServer | null = null;
afterAll(() => srv?.cleanup());

test("a group read mark only moves forward, also across a restart; each advance sends read receipts once", async () => {
  const s = (srv = await startServer());
  const [ka, kb] = [await s.newDevice("gra"), await s.newDevice("grb")];
  let a = await rawLogin(s, ka);
  let b = await rawLogin(s, kb);
  a.send({ t: "iq", id: 1, op: "group.create", a: { name: "reads", m: ["grb"] } });
  const g = ((await a.expect((x) => x.t === "res" && x.id === 1)) as Res).r as { g: string };
  const send = async (id: string) => {
    a.send({ t: "gmsg", id, g: g.g, p: enc(id) });
    return (await a.expect((x) => x.t === "sent" && x.id === id)) as Sent;
  };
  // Read receipts A got, but not the redeliveries of those it got before the restart (never acked here).
  let before = new Set<number>();
  const reads = () => a.received.filter((x): x is Rcpt => x.t === "rcpt" && x.k === "read" && !before.has(x.q)).map((r) => r.seq);

  const m1 = await send("r1");
  b.send({ t: "read", u: g.g, seq: m1.seq });
  await a.expect((x) => x.t === "rcpt" && x.k === "read" && x.seq === m1.seq);
  b.send({ t: "read", u: g.g, seq: m1.seq }); // equal: ignored
  b.send({ t: "read", u: g.g, seq: m1.seq - 1 }); // lower: ignored

  // After kill -9 the mark is where it was: the same read is still ignored.
  await barrier(b);
  before = new Set(a.received.flatMap((x) => ("q" in x && typeof x.q === "number" ? [x.q] : [])));
  await s.kill9();
  await s.restart();
  a = await rawLogin(s, ka);
  b = await rawLogin(s, kb);
  b.send({ t: "read", u: g.g, seq: m1.seq });
  const m2 = await send("r2");
  b.send({ t: "read", u: g.g, seq: m2.seq });
  // Receipts to A are queue items in order: an extra one for m1 would come before m2's.
  await a.expect((x) => x.t === "rcpt" && x.k === "read" && x.seq === m2.seq);
  expect({ reads: reads(), m1: m1.seq, m2: m2.seq }).toEqual({ reads: [m2.seq], m1: m1.seq, m2: m2.seq });
}, 60_000);

/**
 * The strict body decoder (src/protocol/decoder.ts) against msgpackr on the
 * bodies the server decodes most (`bun loadtest/microbench-decode.ts`): ns per
 * decode, median of 7 rounds, the two interleaved so that load on the machine
 * hits both alike. Not part of the load generator proper.
 */
import { decodeBody, decodeBodyMsgpackr, encodeBody } from "../src/protocol/codec.ts";

function round(n: number, fn: () => void): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn();
  return ((performance.now() - t0) * 1e6) / n;
}

const p = new Uint8Array(64).fill(7);
const bodies: [string, Uint8Array][] = [
  ["msg 1:1 (recipient + 1 sync copy, 64 B each)", encodeBody({ t: "msg", id: "mwrsuf89-0-kz0pxu", to: "lt1234abcd-b17", p: [[1, p]], s: [[2, p]] })],
  ["ack of 4 queue ids above 2^32", encodeBody({ t: "ack", q: [1795349680286, 1795349680287, 1795349680288, 1795349680289] })],
  ["msg delivery (what the SDK decodes)", encodeBody({ t: "msg", q: 1795349680286, id: "12345", from: "lt1234abcd-a17", fd: 1, to: "lt1234abcd-b17", seq: 7, ts: Date.now(), p })],
  ["msg with a non-ASCII id", encodeBody({ t: "msg", id: "идентификатор-1", to: "bob", p: [[1, p]] })],
];
let sink = 0;
console.log(`bun ${Bun.version}; ns per decode, median of 7 interleaved rounds\n`);
for (const [name, body] of bodies) {
  const strict: number[] = [];
  const lenient: number[] = [];
  for (let r = 0; r < 7; r++) {
    strict.push(round(200_000, () => (sink += (decodeBody(body) as { t: string }).t.length)));
    lenient.push(round(200_000, () => (sink += (decodeBodyMsgpackr(body) as { t: string }).t.length)));
  }
  const med = (xs: number[]) => xs.sort((a, b) => a - b)[3]!.toFixed(0).padStart(6);
  console.log(`${name.padEnd(48)} strict ${med(strict)}   msgpackr ${med(lenient)}`);
}
if (sink === 0) console.log("");

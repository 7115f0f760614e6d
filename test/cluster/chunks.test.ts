/**
 * chunks.ts chunkRows: a shard's rows of every kind (account, device and code rows, seq bounds, acceptance records,
 * module rows, push jobs, items) cut into chunks that each fit the limit as really encoded (encodeBody, what the link
 * sends), every part whole and in order, every chunk under its own import key, a part bigger than the limit alone
 * in its chunk, and the rows read lazily (a chunk is cut before the parts after it are read).
 * Random sizes: the seed is printed in the test name (rerun with SB_SEED=...).
 */
import { describe, expect, test } from "bun:test";
import { prng } from "../helpers/prng.ts";
import { chunkRows, type Part } from "../../src/core/cluster/chunks.ts";
import type { ShardData } from "../../src/core/cluster/rows.ts";
import { encodeBody } from "../../src/protocol/codec.ts";

const SEED = Number(process.env.SB_SEED ?? Date.now() % 1_000_000);

const HEAD = { shard: 7, from: "n1.abcd1234", epoch: 3, key: "alice", replace: true };

/** Parts of every kind, in an export's order, sizes from `size()`. */
function parts(n: number, size: () => number): Part[] {
  const out: Part[] = [];
  for (let i = 0; i < n; i++) {
    const pad = "x".repeat(size());
    const a = `acct${i}`;
    out.push({ k: "seqs", r: { conv: `${a}\u0000zz${pad}`, hi: i } });
    out.push({ k: "accounts", r: { name: a, created: i, note: pad } });
    out.push({ k: "devices", r: { account: a, device: 1, pk: new Uint8Array(size()) } });
    out.push({ k: "codes", r: { account: a, code: pad } });
    out.push({ k: "records", r: { sender: a, device: 1, cid: `c${i}${pad}`, to: "bob", seq: i, ts: 1 } });
    out.push({ k: "module", m: i % 2 ? "keys" : "presence", t: i % 3 ? "otks" : "contacts", r: { account: a, k: new Uint8Array(size()) } });
    out.push({ k: "jobs", r: { account: a, device: 1, id: `j${i}`, stage: "silent", due: 1, note: pad } as never });
    out.push({ k: "limits", r: { account: a, device: 1, silentAt: i, tokens: 3, note: pad } as never });
    out.push({
      k: "items",
      r: { qid: i + 1, account: a, device: 1, kind: "message", fromAccount: "bob", fromDevice: 1, conv: a, cid: `m${i}`, seq: i + 1, ts: 1_700_000_000_000 + i, body: new Uint8Array(size()).fill(i % 251) } as never,
    });
  }
  return out;
}

/** The parts a chunk carries, in the order chunkRows put them (kinds in the order the import applies them). */
function partsOf(d: ShardData): Part[] {
  const out: Part[] = [];
  for (const r of d.rows.seqs) out.push({ k: "seqs", r });
  for (const k of ["accounts", "devices", "codes"] as const) for (const r of d.rows[k]) out.push({ k, r });
  for (const r of d.records) out.push({ k: "records", r });
  for (const [m, ts] of Object.entries(d.modules)) for (const [t, rs] of Object.entries(ts)) for (const r of rs) out.push({ k: "module", m, t, r });
  for (const r of d.jobs) out.push({ k: "jobs", r });
  for (const r of d.limits) out.push({ k: "limits", r });
  for (const r of d.items) out.push({ k: "items", r });
  return out;
}
const key = (p: Part) => JSON.stringify([p.k, p.k === "module" ? [p.m, p.t] : null, p.r], (_, v) => (v instanceof Uint8Array ? v.length : v));

describe(`chunkRows (seed ${SEED}; rerun with SB_SEED=${SEED})`, () => {
  const rand = prng(SEED);
  test("every kind of row is cut: chunks fit the limit as encoded, every part once, one key each", () => {
    const limit = 16 * 1024;
    const all = parts(200, () => Math.floor(rand() * 1500));
    const cs = [...chunkRows(HEAD, all, limit)];
    expect(cs.length).toBeGreaterThan(20);
    for (const c of cs) expect(encodeBody(c.d).length).toBeLessThanOrEqual(limit);
    for (const c of cs) expect(c.bytes).toBeGreaterThanOrEqual(encodeBody(c.d).length); // the measure is an upper bound
    expect(cs.map((c) => c.index)).toEqual(cs.map((_, i) => i));
    expect(new Set(cs.map((c) => c.d.from)).size).toBe(cs.length);
    for (const c of cs) expect(c.d).toMatchObject({ shard: 7, epoch: 3, key: "alice", replace: true });
    // Each chunk's parts are a run of the input, and the runs tile it: every part once, and within a chunk in
    // the input's order per kind (the import applies a chunk's rows before its module rows, jobs and items).
    const got = cs.flatMap((c) => partsOf(c.d).map(key));
    expect([...got].sort()).toEqual(all.map(key).sort());
    let at = 0;
    for (const c of cs) {
      const run = all.slice(at, at + partsOf(c.d).length);
      expect(partsOf(c.d).map(key).sort()).toEqual(run.map(key).sort());
      at += run.length;
    }
    // The names of a chunk are the accounts whose row it carries.
    for (const c of cs) expect(c.d.names).toEqual(c.d.rows.accounts.map((r) => r.name as string));
    // Rows of kinds other than items are cut too (not all in the first chunk, as before).
    expect(cs.filter((c) => c.d.rows.accounts.length > 0).length).toBeGreaterThan(10);
    expect(cs.filter((c) => Object.keys(c.d.modules).length > 0).length).toBeGreaterThan(10);
    expect(cs.filter((c) => c.d.records.length > 0).length).toBeGreaterThan(10);
  });

  test("one chunk when everything fits; a part over the limit goes alone; nothing gives one empty chunk", () => {
    const small = parts(3, () => 10);
    const one = [...chunkRows(HEAD, small, 1 << 20)];
    expect(one.length).toBe(1);
    expect(partsOf(one[0]!.d).map(key).sort()).toEqual(small.map(key).sort());
    const big: Part[] = [100, 50_000, 100].map((n, i) => ({ k: "items", r: { qid: i + 1, account: "a", device: 1, body: new Uint8Array(n) } as never }));
    expect([...chunkRows(HEAD, big, 8 * 1024)].map((c) => c.d.items.map((it) => it.body.length))).toEqual([[100], [50_000], [100]]);
    const none = [...chunkRows({ ...HEAD, key: null, replace: false }, [], 1024)];
    expect(none.length).toBe(1);
    expect(none[0]!.d).toMatchObject({ names: [], items: [], records: [], jobs: [], limits: [], modules: {}, key: null, replace: false });
  });

  test("read lazily: a chunk is handed out before the parts after it are read", () => {
    let read = 0;
    const all = parts(100, () => 500);
    function* source(): Generator<Part> {
      for (const p of all) read++, yield p;
    }
    const it = chunkRows(HEAD, source(), 4096);
    const first = it.next();
    expect(first.done).toBe(false);
    expect(read).toBeLessThan(all.length / 4); // one chunk's parts and the one that did not fit
    expect(read).toBe(partsOf(first.value!.d).length + 1);
  });
});

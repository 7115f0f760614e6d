/**
 * What Tickets.check (a resume's ticket check: two HMAC-SHA256, the transcripts, the replay record) costs per call,
 * in process, with a real accounts.db, against another tree's for an A/B: 5 000 devices, each resuming with a fresh
 * proof (ts increasing) and its ticket issued at the start, so every check passes and hands the ticket back. The
 * proofs are made with node:crypto beforehand (not timed). One thread, no I/O in the loop.
 *
 *   taskset -c 1 bun loadtest/ticket-check-bench.ts [TREE=this tree] [rounds=5]
 *
 * Prints ns per check for each round (median marked) and one JSON line.
 */
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const tree = resolve(process.argv[2] ?? join(import.meta.dir, ".."));
const rounds = Number(process.argv[3] ?? 5);
const { Tickets } = await import(join(tree, "src/core/tickets.ts"));
const { SqliteAccountStore } = await import(join(tree, "src/store/accounts.ts"));
const { Directory } = await import(join(tree, "src/core/directory.ts"));
const { resumeTranscript } = await import(join(tree, "src/protocol/auth.ts"));

const dir = mkdtempSync(join(tmpdir(), "sb-ticket-bench-"));
try {
  const store = new SqliteAccountStore(dir);
  const t0 = Date.now();
  const tickets = new Tickets(store, new Directory(store, 10), store.serverId(), 3_600_000, t0 - 1000);
  const sid = store.serverId();
  const devices = Array.from({ length: 5000 }, (_, i) => ({ u: `user${i}`, d: 1 + (i % 3) }));
  const issued = devices.map((v) => tickets.issue(v.u, v.d, t0));
  const perRound: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const ts = t0 + 1 + r; // later than the last round's: each proof is new
    // Decoded frames hand the server fresh strings and byte arrays: so do these (copies, made before the clock starts).
    const args = devices.map((v, i) => ({ u: v.u.split("").join(""), d: v.d, tk: new Uint8Array(issued[i].tk), mac: new Uint8Array(createHmac("sha256", issued[i].tks).update(resumeTranscript(sid, v.u, v.d, ts)).digest()) }));
    const start = performance.now();
    let passed = 0;
    for (const a of args) if (!("reason" in tickets.check(a.u, a.d, a.tk, ts, a.mac, ts))) passed++;
    perRound.push(((performance.now() - start) * 1e6) / args.length);
    if (passed !== args.length) throw new Error(`only ${passed} of ${args.length} checks passed in round ${r}`);
  }
  const sorted = [...perRound].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  console.log(`Tickets.check of ${tree}: ${perRound.map((x) => Math.round(x)).join(", ")} ns per check; median ${Math.round(median)}`);
  console.log(JSON.stringify({ bench: "ticket-check", tree, ns_per_check: Math.round(median), rounds: perRound.map(Math.round) }));
  store.close?.();
} finally {
  rmSync(dir, { recursive: true, force: true });
}

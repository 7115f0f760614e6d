/**
 * End-to-end encryption throughput of the SDK's crypto library
 * (src/client/crypto), one thread, no I/O:
 *
 * - 1:1 ratchet messages of 100 B and 1 KB through E2EDevice.encrypt/decrypt
 *   (envelope included), in one direction (symmetric-key ratchet steps only),
 *   and as alternating turns (a DH ratchet step for every message);
 * - sender-key (group) messages of 100 B and 1 KB: encrypt + sign, verify + decrypt;
 * - X3DH session setups: bundle processed by the initiator, prekey message
 *   accepted by the responder (both sides, one setup each);
 * - one 60-digit safety number.
 *
 * Every operation awaits (the E2E code is asynchronous: src/client/crypto/primitives.ts), on the default
 * provider (node:crypto through asyncOf).
 *
 * Usage: taskset -c 1 node_modules/.bin/bun loadtest/crypto-bench.ts [--scale 0.2]
 * Prints one human line per figure, then exactly one JSON line with all of them.
 */
import { E2EDevice, safetyNumber, type Address, type Bundle } from "../src/client/crypto/index.ts";
import { MAX_ONE_TIME_KEYS } from "../src/client/crypto/session.ts";

const args = process.argv.slice(2);
const scaleAt = args.indexOf("--scale");
const scale = scaleAt >= 0 ? Number(args[scaleAt + 1]) : 1;
if (!(scale > 0)) throw new Error("--scale wants a positive number, e.g. --scale 0.2");
const n = (base: number) => Math.max(50, Math.round(base * scale));

const A: Address = { u: "alice", d: 1 };
const B: Address = { u: "bob", d: 1 };
const results: Record<string, number> = {};

function report(key: string, label: string, count: number, ms: number): void {
  const rate = Math.round((count / ms) * 1000);
  results[key] = rate;
  console.log(`${label.padEnd(52)} ${String(rate).padStart(9)} ops/s   (${count} in ${ms.toFixed(0)} ms, ${((ms * 1000) / count).toFixed(1)} µs each)`);
}

async function time(fn: () => Promise<void>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function bundleOf(dev: E2EDevice, otks: number): Promise<{ bundles: Bundle[] }> {
  const a = await dev.publishArgs(otks);
  const base = { ik: a.ik, dh: a.dh, dhs: a.dhs, spk: a.spk };
  return { bundles: (a.otk ?? []).map(([id, k]) => ({ ...base, otk: { id, k } })) };
}

async function pair(): Promise<{ alice: E2EDevice; bob: E2EDevice }> {
  const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
  await alice.processBundle(B, (await bundleOf(bob, 1)).bundles[0]!);
  const r = await bob.decrypt(A, await alice.encrypt(B, new Uint8Array(1)));
  if (!r.ok) throw new Error(r.reason);
  const r2 = await alice.decrypt(B, await bob.encrypt(A, new Uint8Array(1)));
  if (!r2.ok) throw new Error(r2.reason);
  return { alice, bob };
}

async function ratchetOneWay(size: number, count: number): Promise<void> {
  const { alice, bob } = await pair();
  const pt = new Uint8Array(size).fill(7);
  for (let i = 0; i < 200; i++) await bob.decrypt(A, await alice.encrypt(B, pt)); // warm-up
  const msgs: Uint8Array[] = new Array(count);
  const te = await time(async () => {
    for (let i = 0; i < count; i++) msgs[i] = await alice.encrypt(B, pt);
  });
  let bad = 0;
  const td = await time(async () => {
    for (let i = 0; i < count; i++) if (!(await bob.decrypt(A, msgs[i]!)).ok) bad++;
  });
  if (bad) throw new Error(`${bad} messages failed to decrypt`);
  report(`ratchet_encrypt_${size}`, `ratchet encrypt ${size} B (same chain)`, count, te);
  report(`ratchet_decrypt_${size}`, `ratchet decrypt ${size} B (same chain)`, count, td);
}

async function ratchetTurns(size: number, count: number): Promise<void> {
  const { alice, bob } = await pair();
  const pt = new Uint8Array(size).fill(7);
  for (let i = 0; i < 200; i++) {
    await bob.decrypt(A, await alice.encrypt(B, pt));
    await alice.decrypt(B, await bob.encrypt(A, pt)); // warm-up
  }
  let bad = 0;
  const t = await time(async () => {
    for (let i = 0; i < count; i++) {
      const [from, to, fromA, toA] = i % 2 ? [alice, bob, A, B] : [bob, alice, B, A];
      if (!(await to.decrypt(fromA, await from.encrypt(toA, pt))).ok) bad++;
    }
  });
  if (bad) throw new Error(`${bad} messages failed to decrypt`);
  report(`ratchet_turn_${size}`, `ratchet turn ${size} B (encrypt+decrypt, DH step)`, count, t);
}

async function senderKeys(size: number, count: number): Promise<void> {
  const { alice, bob } = await pair();
  const G = "#bench";
  const r = await bob.decrypt(A, await alice.encrypt(B, await alice.groupDistribution(G)));
  if (!r.ok) throw new Error(r.reason);
  bob.processGroupDistribution(A, r.plaintext);
  const pt = new Uint8Array(size).fill(7);
  for (let i = 0; i < 100; i++) await bob.groupDecrypt(G, A, await alice.groupEncrypt(G, pt));
  const msgs: Uint8Array[] = new Array(count);
  const te = await time(async () => {
    for (let i = 0; i < count; i++) msgs[i] = await alice.groupEncrypt(G, pt);
  });
  let bad = 0;
  const td = await time(async () => {
    for (let i = 0; i < count; i++) if (!(await bob.groupDecrypt(G, A, msgs[i]!)).ok) bad++;
  });
  if (bad) throw new Error(`${bad} group messages failed to decrypt`);
  report(`senderkey_encrypt_${size}`, `sender-key encrypt+sign ${size} B`, count, te);
  report(`senderkey_decrypt_${size}`, `sender-key verify+decrypt ${size} B`, count, td);
}

async function x3dh(count: number): Promise<void> {
  const bob = await E2EDevice.create(B);
  const { bundles } = await bundleOf(bob, count);
  const initiators = await Promise.all(Array.from({ length: count }, (_, i) => E2EDevice.create({ u: `a${i}`, d: 1 })));
  const first: Uint8Array[] = new Array(count);
  const pt = new Uint8Array(100);
  const ti = await time(async () => {
    for (let i = 0; i < count; i++) {
      const a = initiators[i]!;
      if (!(await a.processBundle(B, bundles[i]!)).ok) throw new Error("bundle refused");
      first[i] = await a.encrypt(B, pt);
    }
  });
  const tr = await time(async () => {
    for (let i = 0; i < count; i++) {
      const r = await bob.decrypt({ u: `a${i}`, d: 1 }, first[i]!);
      if (!r.ok || !r.newSession) throw new Error(`prekey message refused: ${r.ok ? "no new session" : r.reason}`);
    }
  });
  report("x3dh_initiate", "X3DH initiate (verify bundle, 4 DH, first encrypt)", count, ti);
  report("x3dh_respond", "X3DH respond (verify, 4 DH, ratchet step, decrypt)", count, tr);
  report("x3dh_setup", "X3DH session setup, both sides", count, ti + tr);
}

async function safety(count: number): Promise<void> {
  const devs = await Promise.all([E2EDevice.create(A), E2EDevice.create({ u: "alice", d: 2 }), E2EDevice.create(B)]);
  const ids = devs.map((d) => d.publicIdentity);
  const t = await time(async () => {
    for (let i = 0; i < count; i++) await safetyNumber(devs[0]!.cx, { account: "alice", devices: [ids[0]!, ids[1]!] }, { account: "bob", devices: [ids[2]!] });
  });
  report("safety_number", "safety number (2 × 5200 SHA-512)", count, t);
}

console.log(`crypto bench: bun ${Bun.version}, ${process.platform}/${process.arch}, scale ${scale}`);
await ratchetOneWay(100, n(100_000));
await ratchetOneWay(1024, n(60_000));
await ratchetTurns(100, n(10_000));
await ratchetTurns(1024, n(10_000));
await senderKeys(100, n(20_000));
await senderKeys(1024, n(20_000));
await x3dh(Math.min(n(1_000), MAX_ONE_TIME_KEYS)); // a device holds at most MAX_ONE_TIME_KEYS one-time prekeys
await safety(n(200));
console.log(JSON.stringify({ bench: "crypto", bun: Bun.version, scale, ops_per_s: results }));

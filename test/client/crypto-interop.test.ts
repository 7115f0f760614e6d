/**
 * The E2E code on two implementations of the crypto (node:crypto through
 * asyncOf, WebCrypto) talking to each other: X3DH both ways, the ratchet over
 * many turns and out of order, sender keys both ways, safety numbers computed
 * on either side, a state serialized on one and read on the other. And what
 * being asynchronous must not break: operations started together on one
 * device are serialised (no chain key used twice), and a message tried on
 * several sessions commits nothing of the attempts that failed.
 */
import { describe, expect, test } from "bun:test";
import { asyncOf, E2EDevice, safetyNumber, type Address, type AsyncCryptoProvider, type Bundle, type DecryptOutcome } from "../../src/client/crypto/index.ts";
import { nodeCrypto } from "../../src/client/crypto/node.ts";
import { webCrypto } from "../../src/client/crypto/webcrypto.ts";
import { prng } from "../helpers/prng.ts";

const NODE = asyncOf(nodeCrypto);
const A: Address = { u: "alice", d: 1 };
const B: Address = { u: "bob", d: 1 };
const G = "#interop";
const te = new TextEncoder(), td = new TextDecoder();
const enc = (s: string) => te.encode(s);
const text = (r: DecryptOutcome | { ok: boolean; plaintext?: Uint8Array; reason?: string }): string => {
  if (!r.ok) throw new Error(`decrypt failed: ${(r as { reason: string }).reason}`);
  return td.decode((r as { plaintext: Uint8Array }).plaintext);
};

async function bundleOf(dev: E2EDevice): Promise<Bundle> {
  const a = await dev.publishArgs(1);
  return { ik: a.ik, dh: a.dh, dhs: a.dhs, spk: a.spk, kv: dev.kv, otk: { id: a.otk![0]![0], k: a.otk![0]![1] } };
}

const pairs: [string, AsyncCryptoProvider, AsyncCryptoProvider][] = [
  ["node:crypto initiates, WebCrypto responds", NODE, webCrypto],
  ["WebCrypto initiates, node:crypto responds", webCrypto, NODE],
];

for (const [name, pa, pb] of pairs) {
  describe(name, () => {
    test("X3DH, then the ratchet over 40 turns with messages out of order", async () => {
      const alice = await E2EDevice.create(A, pa), bob = await E2EDevice.create(B, pb);
      expect(alice.cx.provider).toBe(pa);
      expect(bob.cx.provider).toBe(pb);
      expect((await alice.processBundle(B, await bundleOf(bob))).ok).toBe(true);
      const first = await bob.decrypt(A, await alice.encrypt(B, enc("hello across implementations")));
      expect(first.ok && first.newSession).toBe(true);
      expect(text(first)).toBe("hello across implementations");
      const seed = Math.floor(Math.random() * 2 ** 31);
      const rnd = prng(seed);
      try {
        for (let turn = 0; turn < 40; turn++) {
          const [from, to, fromA, toA] = turn % 2 ? [alice, bob, A, B] : [bob, alice, B, A];
          const msgs: [string, Uint8Array][] = [];
          for (let i = 0, n = 1 + Math.floor(rnd() * 4); i < n; i++) msgs.push([`t${turn}m${i}`, await from.encrypt(toA, enc(`t${turn}m${i}`))]);
          for (const [want, m] of msgs.sort(() => rnd() - 0.5)) expect(text(await to.decrypt(fromA, m))).toBe(want);
        }
      } catch (e) {
        throw new Error(`seed ${seed}: ${(e as Error).message}`);
      }
    });

    test("sender keys both ways, delivered through the pairwise session", async () => {
      const alice = await E2EDevice.create(A, pa), bob = await E2EDevice.create(B, pb);
      await alice.processBundle(B, await bundleOf(bob));
      expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("x"))))).toBe("x");
      for (const [from, to, fromA, toA] of [[alice, bob, A, B], [bob, alice, B, A]] as const) {
        const r = await to.decrypt(fromA, await from.encrypt(toA, await from.groupDistribution(G)));
        expect(r.ok && to.processGroupDistribution(fromA, r.plaintext)).toBe(G);
        const ms = [];
        for (let i = 0; i < 5; i++) ms.push(await from.groupEncrypt(G, enc(`${fromA.u} to the group ${i}`)));
        for (const i of [4, 0, 2, 1, 3]) expect(text(await to.groupDecrypt(G, fromA, ms[i]!))).toBe(`${fromA.u} to the group ${i}`);
      }
    });

    test("both compute the same safety number; a state serialized by one is read by the other", async () => {
      const alice = await E2EDevice.create(A, pa), bob = await E2EDevice.create(B, pb);
      const ids = { account: "alice", devices: [alice.publicIdentity] }, idsB = { account: "bob", devices: [bob.publicIdentity] };
      expect(await safetyNumber(alice.cx, ids, idsB)).toBe(await safetyNumber(bob.cx, idsB, ids));
      await alice.processBundle(B, await bundleOf(bob));
      expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("before"))))).toBe("before");
      const bob2 = await E2EDevice.deserialize(bob.serialize(), pa); // bob's state, now on alice's implementation
      expect(bob2.kv).toBe(bob.kv);
      expect(text(await alice.decrypt(B, await bob2.encrypt(A, enc("after the move"))))).toBe("after the move");
      expect(text(await bob2.decrypt(A, await alice.encrypt(B, enc("and back"))))).toBe("and back");
    });
  });
}

describe("asynchronous, and still one operation at a time", () => {
  for (const p of [NODE, webCrypto]) {
    test(`${p.name}: encryptions and decryptions started together are serialised`, async () => {
      const alice = await E2EDevice.create(A, p), bob = await E2EDevice.create(B, p);
      await alice.processBundle(B, await bundleOf(bob));
      expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("hi"))))).toBe("hi");
      expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("hi back"))))).toBe("hi back");
      // 50 encryptions in flight at once: without serialisation several would take the same chain step.
      const sealed = await Promise.all(Array.from({ length: 50 }, (_, i) => alice.encrypt(B, enc(`m${i}`))));
      // And bob's reply, encrypted while his decryptions run (a DH ratchet step interleaved with them).
      const [opened, reply] = await Promise.all([Promise.all(sealed.map((m) => bob.decrypt(A, m))), bob.encrypt(A, enc("reply"))]);
      expect(opened.map(text)).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
      expect(text(await alice.decrypt(B, reply))).toBe("reply");
      // Every message decrypted once: a second time is a duplicate, for all of them.
      const again = await Promise.all(sealed.map((m) => bob.decrypt(A, m)));
      expect(again.every((r) => !r.ok && r.reason === "duplicate")).toBe(true);
    });
  }

  test("a message tried on several sessions commits nothing of the attempts that failed", async () => {
    // Two sessions between alice and bob (both initiated at once), so that bob tries both on what he cannot open.
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
    await alice.processBundle(B, await bundleOf(bob));
    await bob.processBundle(A, await bundleOf(alice));
    expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("from alice's session"))))).toBe("from alice's session"); // bob: 2 sessions
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("answered"))))).toBe("answered"); // alice now sends ratchet messages (t=1)
    const good = await alice.encrypt(B, enc("later"));
    const before = bob.serialize();
    // Tampered (tag, ciphertext, the header's counter): bob tries it on his current session and on the older one; all fail.
    for (const flip of [good.length - 1, good.length - 20, good.length - 22 - 8]) {
      const bad = good.slice();
      bad[flip]! ^= 1;
      const r = await bob.decrypt(A, bad);
      expect(r.ok).toBe(false);
    }
    expect(Buffer.from(bob.serialize()).equals(Buffer.from(before))).toBe(true);
    expect(text(await bob.decrypt(A, good))).toBe("later");
    expect(Buffer.from(bob.serialize()).equals(Buffer.from(before))).toBe(false);
  });
});

/**
 * Sender Keys: distribution through the pairwise session, group messages
 * signed and encrypted once, out-of-order within bounds, replays, tampering,
 * rotation on membership change, serialization.
 */
import { describe, expect, test } from "bun:test";
import {
  E2EDevice, SENDER_MAX_SKIP, primitives as P, createSenderKey, senderContext, senderDecrypt, senderEncrypt, parseDistribution,
  type Address, type Bundle, type GroupDecryptResult,
} from "../../src/client/crypto/index.ts";
import { prng } from "../helpers/prng.ts";

const G = "#team";
const A: Address = { u: "alice", d: 1 };
const B: Address = { u: "bob", d: 1 };
const C: Address = { u: "carol", d: 1 };
const te = new TextEncoder(), td = new TextDecoder();
const enc = (s: string) => te.encode(s);

function text(r: GroupDecryptResult | { ok: boolean; reason?: string; plaintext?: Uint8Array }): string {
  if (!r.ok) throw new Error(`failed: ${(r as { reason: string }).reason}`);
  return td.decode((r as { plaintext: Uint8Array }).plaintext);
}

async function bundleOf(dev: E2EDevice): Promise<Bundle> {
  const a = await dev.publishArgs(1);
  return { ik: a.ik, dh: a.dh, dhs: a.dhs, spk: a.spk, otk: { id: a.otk![0]![0], k: a.otk![0]![1] } };
}

/** Delivers `from`'s sender key for G to `to` the real way: inside the pairwise session. */
async function distribute(from: E2EDevice, fromA: Address, to: E2EDevice, toA: Address, dmIn?: Uint8Array) {
  const dm = dmIn ?? (await from.groupDistribution(G));
  if (!from.hasSession(toA)) expect((await from.processBundle(toA, await bundleOf(to))).ok).toBe(true);
  const r = await to.decrypt(fromA, await from.encrypt(toA, dm));
  if (!r.ok) throw new Error(r.reason);
  expect(to.processGroupDistribution(fromA, r.plaintext)).toBe(G);
}

async function group() {
  const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B), carol = await E2EDevice.create(C);
  await distribute(alice, A, bob, B);
  await distribute(alice, A, carol, C);
  return { alice, bob, carol };
}

describe("sender keys", () => {
  test("one ciphertext, every member decrypts; many messages", async () => {
    const { alice, bob, carol } = await group();
    for (let i = 0; i < 50; i++) {
      const m = await alice.groupEncrypt(G, enc(`g${i}`));
      expect(text(await bob.groupDecrypt(G, A, m))).toBe(`g${i}`);
      expect(text(await carol.groupDecrypt(G, A, m))).toBe(`g${i}`);
    }
  });

  test("out of order within bounds; a replay is a duplicate", async () => {
    const { alice, bob } = await group();
    const msgs: (readonly [number, Uint8Array])[] = [];
    for (let i = 0; i < 40; i++) msgs.push([i, await alice.groupEncrypt(G, enc(`m${i}`))] as const);
    const rnd = prng(3);
    for (const [i, m] of [...msgs].sort(() => rnd() - 0.5)) expect(text(await bob.groupDecrypt(G, A, m))).toBe(`m${i}`);
    for (const [, m] of msgs.slice(0, 5)) expect(await bob.groupDecrypt(G, A, m)).toEqual({ ok: false, reason: "duplicate" });
  });

  test(`more than SENDER_MAX_SKIP (${SENDER_MAX_SKIP}) missing fails and changes nothing; exactly the bound works`, async () => {
    const { alice, bob } = await group();
    const msgs: Uint8Array[] = [];
    for (let i = 0; i < SENDER_MAX_SKIP + 2; i++) msgs.push(await alice.groupEncrypt(G, enc(`m${i}`)));
    expect(await bob.groupDecrypt(G, A, msgs[SENDER_MAX_SKIP + 1]!)).toEqual({ ok: false, reason: "too_many_skipped" });
    expect(text(await bob.groupDecrypt(G, A, msgs[SENDER_MAX_SKIP]!))).toBe(`m${SENDER_MAX_SKIP}`);
    expect(text(await bob.groupDecrypt(G, A, msgs[0]!))).toBe("m0");
    expect(text(await bob.groupDecrypt(G, A, msgs[SENDER_MAX_SKIP + 1]!))).toBe(`m${SENDER_MAX_SKIP + 1}`);
  });

  test("tampering, a forged signature, another group or another sender: refused, state untouched", async () => {
    const { alice, bob } = await group();
    const m = await alice.groupEncrypt(G, enc("signed"));
    const flip = (i: number) => {
      const c = m.slice();
      c[i]! ^= 1;
      return c;
    };
    expect(await bob.groupDecrypt(G, A, flip(12))).toEqual({ ok: false, reason: "bad_signature" }); // ciphertext
    expect(await bob.groupDecrypt(G, A, flip(m.length - 1))).toEqual({ ok: false, reason: "bad_signature" }); // signature
    expect(await bob.groupDecrypt(G, A, flip(7))).toEqual({ ok: false, reason: "bad_signature" }); // iteration
    expect((await bob.groupDecrypt(G, A, flip(2))).ok).toBe(false); // key id: no such key
    expect(await bob.groupDecrypt(G, A, m.subarray(0, 20))).toEqual({ ok: false, reason: "bad_message" });
    expect(await bob.groupDecrypt("#other", A, m)).toEqual({ ok: false, reason: "no_sender_key" });
    expect(await bob.groupDecrypt(G, C, m)).toEqual({ ok: false, reason: "no_sender_key" });
    expect(text(await bob.groupDecrypt(G, A, m))).toBe("signed");

    // the context is signed: the same key state used under another group or sender name fails
    const cx = bob.cx;
    const s = await createSenderKey(cx);
    const ctx = senderContext(G, "alice", 1);
    const theirs = [{ ...s, sig: { pub: s.sig.pub }, skipped: new Map() }]; // a receiver's copy, before the sender moves on
    const msg = await senderEncrypt(cx, s, enc("x"), ctx);
    expect(await senderDecrypt(cx, theirs, msg, senderContext("#other", "alice", 1))).toEqual({ ok: false, reason: "bad_signature" });
    expect(await senderDecrypt(cx, theirs, msg, senderContext(G, "alice", 2))).toEqual({ ok: false, reason: "bad_signature" });
    expect(text(await senderDecrypt(cx, theirs, msg, ctx))).toBe("x");

    // a message the sender itself signed over a broken ciphertext: signature fine, AEAD fails, nothing moves
    const good = await senderEncrypt(cx, s, enc("y"), ctx);
    const body = good.slice(0, good.length - 64);
    body[12]! ^= 1;
    const forged = new Uint8Array([...body, ...(await cx.sign(s.sig.priv!, P.concat(ctx, body)))]);
    expect(await senderDecrypt(cx, theirs, forged, ctx)).toEqual({ ok: false, reason: "bad_mac" });
    expect(theirs[0]!.skipped.size).toBe(0);
    expect(text(await senderDecrypt(cx, theirs, good, ctx))).toBe("y");
  });

  test("a member who joins later reads only what comes after", async () => {
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
    await alice.groupDistribution(G);
    const before = await alice.groupEncrypt(G, enc("before"));
    await distribute(alice, A, bob, B);
    const after = await alice.groupEncrypt(G, enc("after"));
    expect(await bob.groupDecrypt(G, A, before)).toEqual({ ok: false, reason: "duplicate" });
    expect(text(await bob.groupDecrypt(G, A, after))).toBe("after");
  });

  test("rotation after a member leaves: the others read on, the departed member cannot; in-flight messages under the old key still decrypt", async () => {
    const { alice, bob, carol } = await group();
    const inFlight = await alice.groupEncrypt(G, enc("old key"));
    const dm = await alice.rotateGroupKey(G); // carol left
    await distribute(alice, A, bob, B, dm);
    const m = await alice.groupEncrypt(G, enc("without carol"));
    expect(text(await bob.groupDecrypt(G, A, m))).toBe("without carol");
    expect(await carol.groupDecrypt(G, A, m)).toEqual({ ok: false, reason: "no_sender_key" });
    expect(text(await bob.groupDecrypt(G, A, inFlight))).toBe("old key");
    expect(text(await carol.groupDecrypt(G, A, inFlight))).toBe("old key");
  });

  test("a redelivered distribution message does not rewind the chain (no replay through it)", async () => {
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
    const dm = await alice.groupDistribution(G);
    bob.processGroupDistribution(A, dm);
    const m0 = await alice.groupEncrypt(G, enc("m0"));
    expect(text(await bob.groupDecrypt(G, A, m0))).toBe("m0");
    bob.processGroupDistribution(A, dm);
    expect(await bob.groupDecrypt(G, A, m0)).toEqual({ ok: false, reason: "duplicate" });
    expect(text(await bob.groupDecrypt(G, A, await alice.groupEncrypt(G, enc("m1"))))).toBe("m1");
  });

  test("malformed distribution messages are refused; encrypting without a key is a usage error", async () => {
    const bob = await E2EDevice.create(B);
    expect(bob.processGroupDistribution(A, enc("nonsense"))).toBeNull();
    expect(parseDistribution(Uint8Array.of(0x81, 0xa1, 0x67, 0x01))).toBeNull();
    await expect(bob.groupEncrypt(G, enc("x"))).rejects.toThrow(/groupDistribution/);
  });

  test("group state survives serialization on both sides", async () => {
    let { alice, bob } = await group();
    const skipped = await alice.groupEncrypt(G, enc("skipped"));
    expect(text(await bob.groupDecrypt(G, A, await alice.groupEncrypt(G, enc("seen"))))).toBe("seen");
    alice = await E2EDevice.deserialize(alice.serialize());
    bob = await E2EDevice.deserialize(bob.serialize());
    expect(text(await bob.groupDecrypt(G, A, await alice.groupEncrypt(G, enc("after reload"))))).toBe("after reload");
    expect(text(await bob.groupDecrypt(G, A, skipped))).toBe("skipped");
    expect(alice.hasGroupKey(G)).toBe(true);
    expect(bob.hasGroupKeyFrom(G, A)).toBe(true);
  });
});

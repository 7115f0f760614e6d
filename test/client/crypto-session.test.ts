/**
 * X3DH + Double Ratchet through E2EDevice, as two devices use them: sessions
 * from bundles, prekey messages, out-of-order and lost messages, bounds,
 * replays, tampering, identity changes, simultaneous initiation, signed
 * prekey rotation and serialization.
 */
import { describe, expect, test } from "bun:test";
import { E2EDevice, MAX_SKIP, MAX_STORED_SKIPPED, decodeEnvelope, encodeEnvelope, type Bundle, type Address, type DecryptOutcome, type PublishArgs } from "../../src/client/crypto/index.ts";
import { prng } from "../helpers/prng.ts";

const A: Address = { u: "alice", d: 1 };
const B: Address = { u: "bob", d: 1 };
const te = new TextEncoder(), td = new TextDecoder();
const enc = (s: string) => te.encode(s);

/** A bundle as keys.fetch would return it, from what the device published (one otk, or none). */
async function bundleOf(dev: E2EDevice, argsIn?: PublishArgs, otk: number | null = 0): Promise<Bundle> {
  const args = argsIn ?? (await dev.publishArgs(3));
  const b: Bundle = { ik: args.ik, dh: args.dh, dhs: args.dhs, spk: args.spk, kv: dev.kv };
  if (otk !== null && args.otk && args.otk[otk]) b.otk = { id: args.otk[otk]![0], k: args.otk[otk]![1] };
  return b;
}

function text(r: DecryptOutcome): string {
  if (!r.ok) throw new Error(`decrypt failed: ${r.reason}`);
  return td.decode(r.plaintext);
}

/** alice has a session with bob from his bundle; nothing sent yet. */
async function fresh() {
  const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
  const r = await alice.processBundle(B, await bundleOf(bob));
  expect(r).toEqual({ ok: true, identityChanged: false });
  return { alice, bob };
}

/** alice and bob after one round trip (both sides have the session, no prekey messages any more). */
async function established() {
  const { alice, bob } = await fresh();
  expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("hi"))))).toBe("hi");
  expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("hello"))))).toBe("hello");
  return { alice, bob };
}

const kind = (p: Uint8Array) => (decodeEnvelope(p) as { t: number }).t;

describe("sessions", () => {
  test("round trips both ways over many turns; prekey messages until the responder answers", async () => {
    const { alice, bob } = await fresh();
    const otks = bob.oneTimeKeyCount;
    const m1 = await alice.encrypt(B, enc("one"));
    const m2 = await alice.encrypt(B, enc("two"));
    expect(kind(m1)).toBe(2);
    expect(kind(m2)).toBe(2);
    const r1 = await bob.decrypt(A, m1);
    expect(r1.ok && r1.newSession).toBe(true);
    expect(text(r1)).toBe("one");
    expect(bob.oneTimeKeyCount).toBe(otks - 1);
    const r2 = await bob.decrypt(A, m2); // the repeated prekey message belongs to the session just made
    expect(r2.ok && !r2.newSession).toBe(true);
    expect(text(r2)).toBe("two");
    expect(bob.oneTimeKeyCount).toBe(otks - 1);
    const b1 = await bob.encrypt(A, enc("back"));
    expect(kind(b1)).toBe(1);
    expect(text(await alice.decrypt(B, b1))).toBe("back");
    expect(kind(await alice.encrypt(B, enc("now plain")))).toBe(1); // never delivered: bob keeps its key as a skipped one

    const rnd = prng(7);
    for (let turn = 0; turn < 30; turn++) {
      const [from, to, fromA, toA] = turn % 2 ? [alice, bob, A, B] : [bob, alice, B, A];
      const n = 1 + Math.floor(rnd() * 4);
      for (let i = 0; i < n; i++) expect(text(await to.decrypt(fromA, await from.encrypt(toA, enc(`t${turn}m${i}`))))).toBe(`t${turn}m${i}`);
    }
  });

  test("a session set up without a one-time prekey works too", async () => {
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
    expect((await alice.processBundle(B, await await bundleOf(bob, await bob.publishArgs(0), null))).ok).toBe(true);
    expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("x"))))).toBe("x");
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("y"))))).toBe("y");
  });

  test("a lost first message does not stop the session; it decrypts when it comes late", async () => {
    const { alice, bob } = await fresh();
    const lost = await alice.encrypt(B, enc("first"));
    expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("second"))))).toBe("second");
    expect(text(await bob.decrypt(A, lost))).toBe("first");
  });

  test("out of order within a chain: 60 messages in a shuffled order", async () => {
    const { alice, bob } = await established();
    const msgs: (readonly [number, Uint8Array])[] = [];
    for (let i = 0; i < 60; i++) msgs.push([i, await alice.encrypt(B, enc(`m${i}`))] as const);
    const rnd = prng(42);
    const order = [...msgs].sort(() => rnd() - 0.5);
    for (const [i, m] of order) expect(text(await bob.decrypt(A, m))).toBe(`m${i}`);
    expect(bob.skippedKeyCount(A)).toBe(0);
  });

  test("out of order across DH ratchet steps", async () => {
    const { alice, bob } = await established();
    const a1 = await alice.encrypt(B, enc("a1"));
    const a2 = await alice.encrypt(B, enc("a2"));
    expect(text(await bob.decrypt(A, a2))).toBe("a2");
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("b1"))))).toBe("b1");
    const a3 = await alice.encrypt(B, enc("a3")); // new ratchet key; a1 is in the previous chain
    expect(text(await bob.decrypt(A, a3))).toBe("a3");
    expect(text(await bob.decrypt(A, a1))).toBe("a1");
    const b2 = await bob.encrypt(A, enc("b2"));
    const b3 = await bob.encrypt(A, enc("b3"));
    expect(text(await alice.decrypt(B, b3))).toBe("b3");
    expect(text(await alice.decrypt(B, b2))).toBe("b2");
  });

  test("a replayed message fails cleanly as a duplicate, in the current chain, an old chain and from the skipped keys", async () => {
    const { alice, bob } = await established();
    const m = await alice.encrypt(B, enc("once"));
    expect(text(await bob.decrypt(A, m))).toBe("once");
    expect(await bob.decrypt(A, m)).toEqual({ ok: false, reason: "duplicate" });

    const early = await alice.encrypt(B, enc("early"));
    const late = await alice.encrypt(B, enc("late"));
    expect(text(await bob.decrypt(A, late))).toBe("late");
    expect(text(await bob.decrypt(A, early))).toBe("early"); // from the skipped keys
    expect(await bob.decrypt(A, early)).toEqual({ ok: false, reason: "duplicate" });

    // two ratchet steps later, a message of an old chain
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("r1"))))).toBe("r1");
    expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("n1"))))).toBe("n1");
    expect(await bob.decrypt(A, m)).toEqual({ ok: false, reason: "duplicate" });
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("still fine"))))).toBe("still fine");
  });

  test("the prekey message replayed after the session moved on is a duplicate, and burns nothing", async () => {
    const { alice, bob } = await fresh();
    const first = await alice.encrypt(B, enc("first"));
    expect(text(await bob.decrypt(A, first))).toBe("first");
    const otks = bob.oneTimeKeyCount;
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("ok"))))).toBe("ok");
    expect(await bob.decrypt(A, first)).toEqual({ ok: false, reason: "duplicate" });
    expect(bob.oneTimeKeyCount).toBe(otks);
  });

  test(`skipping more than MAX_SKIP (${MAX_SKIP}) messages fails; the session is untouched and exactly MAX_SKIP works`, async () => {
    const { alice, bob } = await established();
    const msgs: Uint8Array[] = [];
    for (let i = 0; i < MAX_SKIP + 3; i++) msgs.push(await alice.encrypt(B, enc(`m${i}`)));
    expect(text(await bob.decrypt(A, msgs[0]!))).toBe("m0"); // the chain is now bob's current receiving chain
    expect(await bob.decrypt(A, msgs[MAX_SKIP + 2]!)).toEqual({ ok: false, reason: "too_many_skipped" });
    expect(bob.skippedKeyCount(A)).toBe(0);
    expect(text(await bob.decrypt(A, msgs[MAX_SKIP + 1]!))).toBe(`m${MAX_SKIP + 1}`); // skips exactly MAX_SKIP
    expect(bob.skippedKeyCount(A)).toBe(MAX_SKIP);
    expect(text(await bob.decrypt(A, msgs[1]!))).toBe("m1");
    expect(text(await bob.decrypt(A, msgs[MAX_SKIP + 2]!))).toBe(`m${MAX_SKIP + 2}`);
  });

  test("the same bound holds for the first message of a new chain", async () => {
    const { alice, bob } = await established();
    const msgs: Uint8Array[] = [];
    for (let i = 0; i < MAX_SKIP + 2; i++) msgs.push(await alice.encrypt(B, enc(`m${i}`)));
    expect(await bob.decrypt(A, msgs[MAX_SKIP + 1]!)).toEqual({ ok: false, reason: "too_many_skipped" });
    expect(text(await bob.decrypt(A, msgs[MAX_SKIP]!))).toBe(`m${MAX_SKIP}`);
    expect(text(await bob.decrypt(A, msgs[0]!))).toBe("m0");
  });

  test(`a new chain that would skip too many (pn or n beyond MAX_SKIP) fails cleanly`, async () => {
    const { alice, bob } = await established();
    for (let i = 0; i <= MAX_SKIP + 1; i++) await alice.encrypt(B, enc("never delivered"));
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("ping"))))).toBe("ping");
    // alice's next message names pn = MAX_SKIP + 2 on her previous chain, which bob never saw
    const m = await alice.encrypt(B, enc("after"));
    expect(await bob.decrypt(A, m)).toEqual({ ok: false, reason: "too_many_skipped" });
  });

  test(`stored skipped keys stay within MAX_STORED_SKIPPED (${MAX_STORED_SKIPPED}); the oldest go first`, async () => {
    const { alice, bob } = await established();
    const oldest: Uint8Array[] = [];
    for (let round = 0; round < 3; round++) {
      const msgs: Uint8Array[] = [];
      for (let i = 0; i < MAX_SKIP; i++) msgs.push(await alice.encrypt(B, enc(`r${round}m${i}`)));
      oldest.push(msgs[0]!);
      expect(text(await bob.decrypt(A, msgs[MAX_SKIP - 1]!))).toBe(`r${round}m${MAX_SKIP - 1}`); // skips MAX_SKIP - 1
      expect(bob.skippedKeyCount(A)).toBeLessThanOrEqual(MAX_STORED_SKIPPED);
      expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("turn"))))).toBe("turn"); // a new chain for alice's next round
    }
    expect(bob.skippedKeyCount(A)).toBe(MAX_STORED_SKIPPED);
    expect(await bob.decrypt(A, oldest[0]!)).toEqual({ ok: false, reason: "duplicate" }); // evicted
    expect(text(await bob.decrypt(A, oldest[2]!))).toBe("r2m0");
  });
});

describe("tampering and misdirection fail cleanly and leave the session working", () => {
  test("flipped bits in ciphertext, tag, header; wrong version; garbage", async () => {
    const { alice, bob } = await established();
    const m = await alice.encrypt(B, enc("secret"));
    const env = decodeEnvelope(m) as { t: 1; h: Uint8Array; c: Uint8Array };
    const flip = (b: Uint8Array, i: number) => {
      const c = b.slice();
      c[i]! ^= 0x01;
      return c;
    };
    const bad: [Uint8Array, string[]][] = [
      [encodeEnvelope({ t: 1, h: env.h, c: flip(env.c, 0) }), ["bad_mac"]],
      [encodeEnvelope({ t: 1, h: env.h, c: flip(env.c, env.c.length - 1) }), ["bad_mac"]],
      [encodeEnvelope({ t: 1, h: flip(env.h, 39), c: env.c }), ["bad_mac"]], // n + 1
      [encodeEnvelope({ t: 1, h: flip(env.h, 35), c: env.c }), ["bad_mac", "too_many_skipped"]], // pn
      [encodeEnvelope({ t: 1, h: flip(env.h, 5), c: env.c }), ["bad_mac", "bad_key"]], // ratchet key
      [encodeEnvelope({ t: 1, h: env.h, c: env.c.subarray(0, 8) }), ["bad_mac"]],
      [Uint8Array.of(9, ...m.subarray(1)), ["bad_version"]],
      [Uint8Array.of(1, 0xc1), ["bad_envelope"]],
      [new Uint8Array(0), ["bad_envelope"]],
      [Uint8Array.of(1, 0x81, 0xa1, 0x74, 0x07), ["bad_envelope"]], // {t: 7}
    ];
    for (const [p, reasons] of bad) {
      const r = await bob.decrypt(A, p);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(reasons).toContain(r.reason);
    }
    expect(text(await bob.decrypt(A, m))).toBe("secret");
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("and back"))))).toBe("and back");
  });

  test("a tampered message of the current receiving chain fails and leaves the chain where it was", async () => {
    const { alice, bob } = await established();
    expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("first of the chain"))))).toBe("first of the chain");
    const m = await alice.encrypt(B, enc("second"));
    const env = decodeEnvelope(m) as { t: 1; h: Uint8Array; c: Uint8Array };
    const c = env.c.slice();
    c[3]! ^= 0x80;
    expect(await bob.decrypt(A, encodeEnvelope({ t: 1, h: env.h, c }))).toEqual({ ok: false, reason: "bad_mac" });
    expect(bob.skippedKeyCount(A)).toBe(0);
    expect(text(await bob.decrypt(A, m))).toBe("second");
  });

  test("a tampered prekey message fails, burns no one-time key, and the real one still works", async () => {
    const { alice, bob } = await fresh();
    const m = await alice.encrypt(B, enc("hi"));
    const env = decodeEnvelope(m) as any;
    const otks = bob.oneTimeKeyCount;
    const variants = [
      { ...env, e: alice.publicIdentity.dh }, // another ephemeral key
      { ...env, dhs: new Uint8Array(64) }, // identity not signed
      { ...env, dh: bob.publicIdentity.dh }, // someone else's identity DH key, signature no longer matches
      { ...env, s: env.s + 1 }, // unknown signed prekey
      { ...env, o: 999999 }, // unknown one-time prekey
      { ...env, c: env.c.map((x: number, i: number) => (i === 0 ? x ^ 1 : x)) },
    ];
    const reasons: string[] = [];
    for (const v of variants) {
      const r = await bob.decrypt(A, encodeEnvelope(v));
      reasons.push(r.ok ? "ok" : r.reason);
    }
    expect(reasons).toEqual(["bad_mac", "bad_signature", "bad_signature", "unknown_prekey", "unknown_prekey", "bad_mac"]);
    expect(bob.oneTimeKeyCount).toBe(otks);
    expect(bob.hasSession(A)).toBe(false);
    expect(text(await bob.decrypt(A, m))).toBe("hi");
  });

  test("a message presented as coming from another device or account does not decrypt", async () => {
    const { alice, bob } = await fresh();
    const first = await alice.encrypt(B, enc("from alice 1"));
    // a relabelled prekey message: the addresses are in the associated data
    expect(await bob.decrypt({ u: "mallory", d: 1 }, first)).toEqual({ ok: false, reason: "bad_mac" });
    expect(await bob.decrypt({ u: "alice", d: 2 }, first)).toEqual({ ok: false, reason: "bad_mac" });
    expect(text(await bob.decrypt(A, first))).toBe("from alice 1");
    expect(await bob.decrypt({ u: "alice", d: 2 }, await alice.encrypt(B, enc("x")))).toMatchObject({ ok: false });
  });

  test("a session made for one recipient is useless to another", async () => {
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B), carol = await E2EDevice.create({ u: "carol", d: 1 });
    await alice.processBundle(B, await bundleOf(bob));
    const m = await alice.encrypt(B, enc("for bob"));
    expect((await carol.decrypt(A, m)).ok).toBe(false);
    expect(text(await bob.decrypt(A, m))).toBe("for bob");
  });

  test("bundles with a bad signature or malformed keys are refused", async () => {
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
    const good = await bundleOf(bob);
    expect(await alice.processBundle(B, { ...good, dhs: new Uint8Array(64) })).toEqual({ ok: false, reason: "bad_signature" });
    expect(await alice.processBundle(B, { ...good, spk: { ...good.spk, k: alice.publicIdentity.dh } })).toEqual({ ok: false, reason: "bad_signature" });
    expect(await alice.processBundle(B, { ...good, ik: new Uint8Array(31) })).toEqual({ ok: false, reason: "bad_bundle" });
    expect(await alice.processBundle(B, { ...good, otk: { id: 1, k: new Uint8Array(3) } })).toEqual({ ok: false, reason: "bad_bundle" });
    expect(alice.hasSession(B)).toBe(false);
    await expect(alice.encrypt(B, enc("x"))).rejects.toThrow(/processBundle/);
  });
});

describe("identities", () => {
  test("a device that re-keys needs a new session; both sides see the identity change", async () => {
    const { alice, bob } = await established();
    const oldBob = bob.publicIdentity;
    const bob2 = await E2EDevice.create(B); // bob's device reinstalled: new identity, same address
    // alice's old session is useless to the new bob
    expect(await bob2.decrypt(A, await alice.encrypt(B, enc("lost")))).toEqual({ ok: false, reason: "no_session" });
    const r = await alice.processBundle(B, await bundleOf(bob2));
    expect(r.ok && r.identityChanged).toBe(true);
    if (r.ok) expect(Buffer.from(r.previous!.ik).equals(Buffer.from(oldBob.ik))).toBe(true);
    expect(Buffer.from(alice.knownIdentity(B)!.ik).equals(Buffer.from(bob2.publicIdentity.ik))).toBe(true);
    expect(text(await bob2.decrypt(A, await alice.encrypt(B, enc("new"))))).toBe("new");
    expect(text(await alice.decrypt(B, await bob2.encrypt(A, enc("newer"))))).toBe("newer");

    // and the other way: alice re-keys and writes first; bob2 learns it from the prekey message
    const alice2 = await E2EDevice.create(A);
    await alice2.processBundle(B, await bundleOf(bob2));
    const got = await bob2.decrypt(A, await alice2.encrypt(B, enc("it's me, new keys")));
    expect(got.ok && got.identityChanged && got.newSession).toBe(true);
    expect(text(got)).toBe("it's me, new keys");
    // the old alice's session is gone at bob2
    expect((await bob2.decrypt(A, await alice.encrypt(B, enc("old")))).ok).toBe(false);
  });

  test("the same identity in a new bundle is not a change", async () => {
    const { alice, bob } = await established();
    const r = await alice.processBundle(B, await bundleOf(bob));
    expect(r).toEqual({ ok: true, identityChanged: false });
  });
});

describe("simultaneous initiation and prekey rotation", () => {
  test("two devices that start sessions with each other at once converge on one", async () => {
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
    await alice.processBundle(B, await bundleOf(bob));
    await bob.processBundle(A, await bundleOf(alice));
    const fromA = await alice.encrypt(B, enc("hi bob"));
    const fromB = await bob.encrypt(A, enc("hi alice"));
    expect(text(await bob.decrypt(A, fromA))).toBe("hi bob");
    expect(text(await alice.decrypt(B, fromB))).toBe("hi alice");
    for (let i = 0; i < 4; i++) {
      expect(text(await bob.decrypt(A, await alice.encrypt(B, enc(`a${i}`))))).toBe(`a${i}`);
      expect(text(await alice.decrypt(B, await bob.encrypt(A, enc(`b${i}`))))).toBe(`b${i}`);
    }
    expect(alice.sessionId(B)).toBe(bob.sessionId(A)!);
  });

  test("a prekey message for a rotated signed prekey works while it is kept, then fails as unknown_prekey", async () => {
    const alice = await E2EDevice.create(A), bob = await E2EDevice.create(B);
    await alice.processBundle(B, await bundleOf(bob));
    await bob.rotateSignedPreKey();
    await bob.rotateSignedPreKey();
    const m = await alice.encrypt(B, enc("x"));
    const probe = await E2EDevice.deserialize(bob.serialize());
    expect(text(await probe.decrypt(A, m))).toBe("x"); // two rotations later: still kept
    await bob.rotateSignedPreKey();
    expect(await bob.decrypt(A, m)).toEqual({ ok: false, reason: "unknown_prekey" });
  });

  test("a one-time prekey is single use", async () => {
    const bob = await E2EDevice.create(B);
    const args = await bob.publishArgs(2);
    const a1 = await E2EDevice.create(A), a2 = await E2EDevice.create({ u: "alice", d: 2 });
    await a1.processBundle(B, await bundleOf(bob, args, 0));
    await a2.processBundle(B, await bundleOf(bob, args, 0)); // a misbehaving server hands the same otk out twice
    expect(text(await bob.decrypt(A, await a1.encrypt(B, enc("one"))))).toBe("one");
    expect(await bob.decrypt({ u: "alice", d: 2 }, await a2.encrypt(B, enc("two")))).toEqual({ ok: false, reason: "unknown_prekey" });
  });
});

describe("serialization", () => {
  test("both devices survive a serialize/deserialize mid-conversation, with skipped keys and a pending prekey session", async () => {
    let { alice, bob } = await fresh();
    const early = await alice.encrypt(B, enc("early"));
    const p2 = await alice.encrypt(B, enc("p2"));
    expect(text(await bob.decrypt(A, p2))).toBe("p2");
    const carol = await E2EDevice.create({ u: "carol", d: 3 });
    await carol.processBundle(A, await bundleOf(alice)); // alice will receive a prekey message after the reload

    const aBytes = alice.serialize(), bBytes = bob.serialize();
    alice = await E2EDevice.deserialize(aBytes);
    bob = await E2EDevice.deserialize(bBytes);
    expect(Buffer.from(alice.serialize()).equals(Buffer.from(aBytes))).toBe(true);
    expect(Buffer.from(bob.serialize()).equals(Buffer.from(bBytes))).toBe(true);

    expect(kind(await alice.encrypt(B, enc("still prekey")))).toBe(2); // pending survived
    expect(text(await bob.decrypt(A, early))).toBe("early"); // skipped key survived
    expect(text(await alice.decrypt(B, await bob.encrypt(A, enc("b"))))).toBe("b");
    expect(text(await bob.decrypt(A, await alice.encrypt(B, enc("a"))))).toBe("a");
    expect(text(await alice.decrypt({ u: "carol", d: 3 }, await carol.encrypt(A, enc("from carol"))))).toBe("from carol"); // prekeys survived
    expect(alice.knownIdentity(B)!.kv).toBe(bob.kv);
  });

  test("deserialize refuses what is not a state, with a message that says so", async () => {
    await expect(E2EDevice.deserialize(Uint8Array.of(1, 2, 3))).rejects.toThrow(/not an E2E state/);
  });
});

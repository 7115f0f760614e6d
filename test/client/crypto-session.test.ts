/**
 * X3DH + Double Ratchet through E2EDevice, as two devices use them: sessions
 * from bundles, prekey messages, out-of-order and lost messages, bounds,
 * replays, tampering, identity changes, simultaneous initiation, signed
 * prekey rotation and serialization.
 */
import { describe, expect, test } from "bun:test";
import { E2EDevice, MAX_SKIP, MAX_STORED_SKIPPED, decodeEnvelope, encodeEnvelope, type Bundle, type Address, type DecryptOutcome } from "../../src/client/crypto/index.ts";
import { prng } from "../helpers/prng.ts";

const A: Address = { u: "alice", d: 1 };
const B: Address = { u: "bob", d: 1 };
const te = new TextEncoder(), td = new TextDecoder();
const enc = (s: string) => te.encode(s);

/** A bundle as keys.fetch would return it, from what the device published (one otk, or none). */
function bundleOf(dev: E2EDevice, args = dev.publishArgs(3), otk: number | null = 0): Bundle {
  const b: Bundle = { ik: args.ik, dh: args.dh, dhs: args.dhs, spk: args.spk, kv: dev.kv };
  if (otk !== null && args.otk && args.otk[otk]) b.otk = { id: args.otk[otk]![0], k: args.otk[otk]![1] };
  return b;
}

function text(r: DecryptOutcome): string {
  if (!r.ok) throw new Error(`decrypt failed: ${r.reason}`);
  return td.decode(r.plaintext);
}

/** alice has a session with bob from his bundle; nothing sent yet. */
function fresh() {
  const alice = E2EDevice.create(A), bob = E2EDevice.create(B);
  const r = alice.processBundle(B, bundleOf(bob));
  expect(r).toEqual({ ok: true, identityChanged: false });
  return { alice, bob };
}

/** alice and bob after one round trip (both sides have the session, no prekey messages any more). */
function established() {
  const { alice, bob } = fresh();
  expect(text(bob.decrypt(A, alice.encrypt(B, enc("hi"))))).toBe("hi");
  expect(text(alice.decrypt(B, bob.encrypt(A, enc("hello"))))).toBe("hello");
  return { alice, bob };
}

const kind = (p: Uint8Array) => (decodeEnvelope(p) as { t: number }).t;

describe("sessions", () => {
  test("round trips both ways over many turns; prekey messages until the responder answers", () => {
    const { alice, bob } = fresh();
    const otks = bob.oneTimeKeyCount;
    const m1 = alice.encrypt(B, enc("one"));
    const m2 = alice.encrypt(B, enc("two"));
    expect(kind(m1)).toBe(2);
    expect(kind(m2)).toBe(2);
    const r1 = bob.decrypt(A, m1);
    expect(r1.ok && r1.newSession).toBe(true);
    expect(text(r1)).toBe("one");
    expect(bob.oneTimeKeyCount).toBe(otks - 1);
    const r2 = bob.decrypt(A, m2); // the repeated prekey message belongs to the session just made
    expect(r2.ok && !r2.newSession).toBe(true);
    expect(text(r2)).toBe("two");
    expect(bob.oneTimeKeyCount).toBe(otks - 1);
    const b1 = bob.encrypt(A, enc("back"));
    expect(kind(b1)).toBe(1);
    expect(text(alice.decrypt(B, b1))).toBe("back");
    expect(kind(alice.encrypt(B, enc("now plain")))).toBe(1); // never delivered: bob keeps its key as a skipped one

    const rnd = prng(7);
    for (let turn = 0; turn < 30; turn++) {
      const [from, to, fromA, toA] = turn % 2 ? [alice, bob, A, B] : [bob, alice, B, A];
      const n = 1 + Math.floor(rnd() * 4);
      for (let i = 0; i < n; i++) expect(text(to.decrypt(fromA, from.encrypt(toA, enc(`t${turn}m${i}`))))).toBe(`t${turn}m${i}`);
    }
  });

  test("a session set up without a one-time prekey works too", () => {
    const alice = E2EDevice.create(A), bob = E2EDevice.create(B);
    expect(alice.processBundle(B, bundleOf(bob, bob.publishArgs(0), null)).ok).toBe(true);
    expect(text(bob.decrypt(A, alice.encrypt(B, enc("x"))))).toBe("x");
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("y"))))).toBe("y");
  });

  test("a lost first message does not stop the session; it decrypts when it comes late", () => {
    const { alice, bob } = fresh();
    const lost = alice.encrypt(B, enc("first"));
    expect(text(bob.decrypt(A, alice.encrypt(B, enc("second"))))).toBe("second");
    expect(text(bob.decrypt(A, lost))).toBe("first");
  });

  test("out of order within a chain: 60 messages in a shuffled order", () => {
    const { alice, bob } = established();
    const msgs = Array.from({ length: 60 }, (_, i) => [i, alice.encrypt(B, enc(`m${i}`))] as const);
    const rnd = prng(42);
    const order = [...msgs].sort(() => rnd() - 0.5);
    for (const [i, m] of order) expect(text(bob.decrypt(A, m))).toBe(`m${i}`);
    expect(bob.skippedKeyCount(A)).toBe(0);
  });

  test("out of order across DH ratchet steps", () => {
    const { alice, bob } = established();
    const a1 = alice.encrypt(B, enc("a1"));
    const a2 = alice.encrypt(B, enc("a2"));
    expect(text(bob.decrypt(A, a2))).toBe("a2");
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("b1"))))).toBe("b1");
    const a3 = alice.encrypt(B, enc("a3")); // new ratchet key; a1 is in the previous chain
    expect(text(bob.decrypt(A, a3))).toBe("a3");
    expect(text(bob.decrypt(A, a1))).toBe("a1");
    const b2 = bob.encrypt(A, enc("b2"));
    const b3 = bob.encrypt(A, enc("b3"));
    expect(text(alice.decrypt(B, b3))).toBe("b3");
    expect(text(alice.decrypt(B, b2))).toBe("b2");
  });

  test("a replayed message fails cleanly as a duplicate, in the current chain, an old chain and from the skipped keys", () => {
    const { alice, bob } = established();
    const m = alice.encrypt(B, enc("once"));
    expect(text(bob.decrypt(A, m))).toBe("once");
    expect(bob.decrypt(A, m)).toEqual({ ok: false, reason: "duplicate" });

    const early = alice.encrypt(B, enc("early"));
    const late = alice.encrypt(B, enc("late"));
    expect(text(bob.decrypt(A, late))).toBe("late");
    expect(text(bob.decrypt(A, early))).toBe("early"); // from the skipped keys
    expect(bob.decrypt(A, early)).toEqual({ ok: false, reason: "duplicate" });

    // two ratchet steps later, a message of an old chain
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("r1"))))).toBe("r1");
    expect(text(bob.decrypt(A, alice.encrypt(B, enc("n1"))))).toBe("n1");
    expect(bob.decrypt(A, m)).toEqual({ ok: false, reason: "duplicate" });
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("still fine"))))).toBe("still fine");
  });

  test("the prekey message replayed after the session moved on is a duplicate, and burns nothing", () => {
    const { alice, bob } = fresh();
    const first = alice.encrypt(B, enc("first"));
    expect(text(bob.decrypt(A, first))).toBe("first");
    const otks = bob.oneTimeKeyCount;
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("ok"))))).toBe("ok");
    expect(bob.decrypt(A, first)).toEqual({ ok: false, reason: "duplicate" });
    expect(bob.oneTimeKeyCount).toBe(otks);
  });

  test(`skipping more than MAX_SKIP (${MAX_SKIP}) messages fails; the session is untouched and exactly MAX_SKIP works`, () => {
    const { alice, bob } = established();
    const msgs = Array.from({ length: MAX_SKIP + 3 }, (_, i) => alice.encrypt(B, enc(`m${i}`)));
    expect(text(bob.decrypt(A, msgs[0]!))).toBe("m0"); // the chain is now bob's current receiving chain
    expect(bob.decrypt(A, msgs[MAX_SKIP + 2]!)).toEqual({ ok: false, reason: "too_many_skipped" });
    expect(bob.skippedKeyCount(A)).toBe(0);
    expect(text(bob.decrypt(A, msgs[MAX_SKIP + 1]!))).toBe(`m${MAX_SKIP + 1}`); // skips exactly MAX_SKIP
    expect(bob.skippedKeyCount(A)).toBe(MAX_SKIP);
    expect(text(bob.decrypt(A, msgs[1]!))).toBe("m1");
    expect(text(bob.decrypt(A, msgs[MAX_SKIP + 2]!))).toBe(`m${MAX_SKIP + 2}`);
  });

  test("the same bound holds for the first message of a new chain", () => {
    const { alice, bob } = established();
    const msgs = Array.from({ length: MAX_SKIP + 2 }, (_, i) => alice.encrypt(B, enc(`m${i}`)));
    expect(bob.decrypt(A, msgs[MAX_SKIP + 1]!)).toEqual({ ok: false, reason: "too_many_skipped" });
    expect(text(bob.decrypt(A, msgs[MAX_SKIP]!))).toBe(`m${MAX_SKIP}`);
    expect(text(bob.decrypt(A, msgs[0]!))).toBe("m0");
  });

  test(`a new chain that would skip too many (pn or n beyond MAX_SKIP) fails cleanly`, () => {
    const { alice, bob } = established();
    for (let i = 0; i <= MAX_SKIP + 1; i++) alice.encrypt(B, enc("never delivered"));
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("ping"))))).toBe("ping");
    // alice's next message names pn = MAX_SKIP + 2 on her previous chain, which bob never saw
    const m = alice.encrypt(B, enc("after"));
    expect(bob.decrypt(A, m)).toEqual({ ok: false, reason: "too_many_skipped" });
  });

  test(`stored skipped keys stay within MAX_STORED_SKIPPED (${MAX_STORED_SKIPPED}); the oldest go first`, () => {
    const { alice, bob } = established();
    const oldest: Uint8Array[] = [];
    for (let round = 0; round < 3; round++) {
      const msgs = Array.from({ length: MAX_SKIP }, (_, i) => alice.encrypt(B, enc(`r${round}m${i}`)));
      oldest.push(msgs[0]!);
      expect(text(bob.decrypt(A, msgs[MAX_SKIP - 1]!))).toBe(`r${round}m${MAX_SKIP - 1}`); // skips MAX_SKIP - 1
      expect(bob.skippedKeyCount(A)).toBeLessThanOrEqual(MAX_STORED_SKIPPED);
      expect(text(alice.decrypt(B, bob.encrypt(A, enc("turn"))))).toBe("turn"); // a new chain for alice's next round
    }
    expect(bob.skippedKeyCount(A)).toBe(MAX_STORED_SKIPPED);
    expect(bob.decrypt(A, oldest[0]!)).toEqual({ ok: false, reason: "duplicate" }); // evicted
    expect(text(bob.decrypt(A, oldest[2]!))).toBe("r2m0");
  });
});

describe("tampering and misdirection fail cleanly and leave the session working", () => {
  test("flipped bits in ciphertext, tag, header; wrong version; garbage", () => {
    const { alice, bob } = established();
    const m = alice.encrypt(B, enc("secret"));
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
      const r = bob.decrypt(A, p);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(reasons).toContain(r.reason);
    }
    expect(text(bob.decrypt(A, m))).toBe("secret");
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("and back"))))).toBe("and back");
  });

  test("a tampered message of the current receiving chain fails and leaves the chain where it was", () => {
    const { alice, bob } = established();
    expect(text(bob.decrypt(A, alice.encrypt(B, enc("first of the chain"))))).toBe("first of the chain");
    const m = alice.encrypt(B, enc("second"));
    const env = decodeEnvelope(m) as { t: 1; h: Uint8Array; c: Uint8Array };
    const c = env.c.slice();
    c[3]! ^= 0x80;
    expect(bob.decrypt(A, encodeEnvelope({ t: 1, h: env.h, c }))).toEqual({ ok: false, reason: "bad_mac" });
    expect(bob.skippedKeyCount(A)).toBe(0);
    expect(text(bob.decrypt(A, m))).toBe("second");
  });

  test("a tampered prekey message fails, burns no one-time key, and the real one still works", () => {
    const { alice, bob } = fresh();
    const m = alice.encrypt(B, enc("hi"));
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
    const reasons = variants.map((v) => {
      const r = bob.decrypt(A, encodeEnvelope(v));
      return r.ok ? "ok" : r.reason;
    });
    expect(reasons).toEqual(["bad_mac", "bad_signature", "bad_signature", "unknown_prekey", "unknown_prekey", "bad_mac"]);
    expect(bob.oneTimeKeyCount).toBe(otks);
    expect(bob.hasSession(A)).toBe(false);
    expect(text(bob.decrypt(A, m))).toBe("hi");
  });

  test("a message presented as coming from another device or account does not decrypt", () => {
    const { alice, bob } = fresh();
    const first = alice.encrypt(B, enc("from alice 1"));
    // a relabelled prekey message: the addresses are in the associated data
    expect(bob.decrypt({ u: "mallory", d: 1 }, first)).toEqual({ ok: false, reason: "bad_mac" });
    expect(bob.decrypt({ u: "alice", d: 2 }, first)).toEqual({ ok: false, reason: "bad_mac" });
    expect(text(bob.decrypt(A, first))).toBe("from alice 1");
    expect(bob.decrypt({ u: "alice", d: 2 }, alice.encrypt(B, enc("x")))).toMatchObject({ ok: false });
  });

  test("a session made for one recipient is useless to another", () => {
    const alice = E2EDevice.create(A), bob = E2EDevice.create(B), carol = E2EDevice.create({ u: "carol", d: 1 });
    alice.processBundle(B, bundleOf(bob));
    const m = alice.encrypt(B, enc("for bob"));
    expect(carol.decrypt(A, m).ok).toBe(false);
    expect(text(bob.decrypt(A, m))).toBe("for bob");
  });

  test("bundles with a bad signature or malformed keys are refused", () => {
    const alice = E2EDevice.create(A), bob = E2EDevice.create(B);
    const good = bundleOf(bob);
    expect(alice.processBundle(B, { ...good, dhs: new Uint8Array(64) })).toEqual({ ok: false, reason: "bad_signature" });
    expect(alice.processBundle(B, { ...good, spk: { ...good.spk, k: alice.publicIdentity.dh } })).toEqual({ ok: false, reason: "bad_signature" });
    expect(alice.processBundle(B, { ...good, ik: new Uint8Array(31) })).toEqual({ ok: false, reason: "bad_bundle" });
    expect(alice.processBundle(B, { ...good, otk: { id: 1, k: new Uint8Array(3) } })).toEqual({ ok: false, reason: "bad_bundle" });
    expect(alice.hasSession(B)).toBe(false);
    expect(() => alice.encrypt(B, enc("x"))).toThrow(/processBundle/);
  });
});

describe("identities", () => {
  test("a device that re-keys needs a new session; both sides see the identity change", () => {
    const { alice, bob } = established();
    const oldBob = bob.publicIdentity;
    const bob2 = E2EDevice.create(B); // bob's device reinstalled: new identity, same address
    // alice's old session is useless to the new bob
    expect(bob2.decrypt(A, alice.encrypt(B, enc("lost")))).toEqual({ ok: false, reason: "no_session" });
    const r = alice.processBundle(B, bundleOf(bob2));
    expect(r.ok && r.identityChanged).toBe(true);
    if (r.ok) expect(Buffer.from(r.previous!.ik).equals(Buffer.from(oldBob.ik))).toBe(true);
    expect(Buffer.from(alice.knownIdentity(B)!.ik).equals(Buffer.from(bob2.publicIdentity.ik))).toBe(true);
    expect(text(bob2.decrypt(A, alice.encrypt(B, enc("new"))))).toBe("new");
    expect(text(alice.decrypt(B, bob2.encrypt(A, enc("newer"))))).toBe("newer");

    // and the other way: alice re-keys and writes first; bob2 learns it from the prekey message
    const alice2 = E2EDevice.create(A);
    alice2.processBundle(B, bundleOf(bob2));
    const got = bob2.decrypt(A, alice2.encrypt(B, enc("it's me, new keys")));
    expect(got.ok && got.identityChanged && got.newSession).toBe(true);
    expect(text(got)).toBe("it's me, new keys");
    // the old alice's session is gone at bob2
    expect(bob2.decrypt(A, alice.encrypt(B, enc("old"))).ok).toBe(false);
  });

  test("the same identity in a new bundle is not a change", () => {
    const { alice, bob } = established();
    const r = alice.processBundle(B, bundleOf(bob));
    expect(r).toEqual({ ok: true, identityChanged: false });
  });
});

describe("simultaneous initiation and prekey rotation", () => {
  test("two devices that start sessions with each other at once converge on one", () => {
    const alice = E2EDevice.create(A), bob = E2EDevice.create(B);
    alice.processBundle(B, bundleOf(bob));
    bob.processBundle(A, bundleOf(alice));
    const fromA = alice.encrypt(B, enc("hi bob"));
    const fromB = bob.encrypt(A, enc("hi alice"));
    expect(text(bob.decrypt(A, fromA))).toBe("hi bob");
    expect(text(alice.decrypt(B, fromB))).toBe("hi alice");
    for (let i = 0; i < 4; i++) {
      expect(text(bob.decrypt(A, alice.encrypt(B, enc(`a${i}`))))).toBe(`a${i}`);
      expect(text(alice.decrypt(B, bob.encrypt(A, enc(`b${i}`))))).toBe(`b${i}`);
    }
    expect(alice.sessionId(B)).toBe(bob.sessionId(A)!);
  });

  test("a prekey message for a rotated signed prekey works while it is kept, then fails as unknown_prekey", () => {
    const alice = E2EDevice.create(A), bob = E2EDevice.create(B);
    alice.processBundle(B, bundleOf(bob));
    bob.rotateSignedPreKey();
    bob.rotateSignedPreKey();
    const m = alice.encrypt(B, enc("x"));
    const probe = E2EDevice.deserialize(bob.serialize());
    expect(text(probe.decrypt(A, m))).toBe("x"); // two rotations later: still kept
    bob.rotateSignedPreKey();
    expect(bob.decrypt(A, m)).toEqual({ ok: false, reason: "unknown_prekey" });
  });

  test("a one-time prekey is single use", () => {
    const bob = E2EDevice.create(B);
    const args = bob.publishArgs(2);
    const a1 = E2EDevice.create(A), a2 = E2EDevice.create({ u: "alice", d: 2 });
    a1.processBundle(B, bundleOf(bob, args, 0));
    a2.processBundle(B, bundleOf(bob, args, 0)); // a misbehaving server hands the same otk out twice
    expect(text(bob.decrypt(A, a1.encrypt(B, enc("one"))))).toBe("one");
    expect(bob.decrypt({ u: "alice", d: 2 }, a2.encrypt(B, enc("two")))).toEqual({ ok: false, reason: "unknown_prekey" });
  });
});

describe("serialization", () => {
  test("both devices survive a serialize/deserialize mid-conversation, with skipped keys and a pending prekey session", () => {
    let { alice, bob } = fresh();
    const early = alice.encrypt(B, enc("early"));
    const p2 = alice.encrypt(B, enc("p2"));
    expect(text(bob.decrypt(A, p2))).toBe("p2");
    const carol = E2EDevice.create({ u: "carol", d: 3 });
    carol.processBundle(A, bundleOf(alice)); // alice will receive a prekey message after the reload

    const aBytes = alice.serialize(), bBytes = bob.serialize();
    alice = E2EDevice.deserialize(aBytes);
    bob = E2EDevice.deserialize(bBytes);
    expect(Buffer.from(alice.serialize()).equals(Buffer.from(aBytes))).toBe(true);
    expect(Buffer.from(bob.serialize()).equals(Buffer.from(bBytes))).toBe(true);

    expect(kind(alice.encrypt(B, enc("still prekey")))).toBe(2); // pending survived
    expect(text(bob.decrypt(A, early))).toBe("early"); // skipped key survived
    expect(text(alice.decrypt(B, bob.encrypt(A, enc("b"))))).toBe("b");
    expect(text(bob.decrypt(A, alice.encrypt(B, enc("a"))))).toBe("a");
    expect(text(alice.decrypt({ u: "carol", d: 3 }, carol.encrypt(A, enc("from carol"))))).toBe("from carol"); // prekeys survived
    expect(alice.knownIdentity(B)!.kv).toBe(bob.kv);
  });

  test("deserialize refuses what is not a state, with a message that says so", () => {
    expect(() => E2EDevice.deserialize(Uint8Array.of(1, 2, 3))).toThrow(/not an E2E state/);
  });
});

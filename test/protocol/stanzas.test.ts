import { describe, expect, test } from "bun:test";
import { decodeBody, encodeBody } from "../../src/protocol/codec.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";
import {
  ACCOUNT_NAME_RE,
  CLIENT_SCHEMAS,
  LIMITS,
  SERVER_SCHEMAS,
  validate,
  validateClient,
  validateServer,
} from "../../src/protocol/stanzas.ts";

type Body = Record<string, unknown>;
type Schemas = typeof CLIENT_SCHEMAS | typeof SERVER_SCHEMAS;
type Checked = { ok: true; stanza: unknown } | { ok: false; code: string; message: string; id?: string | number };
type FieldType = { k: string; max?: number; min?: number; len?: number; re?: RegExp; oneOf?: readonly string[] };

const bin = (n: number, fill = 0x5a) => new Uint8Array(n).fill(fill);
const TS = 1_700_000_000_000;

/** One valid example per kind, with every optional field present. */
const CLIENT_EXAMPLES: Record<keyof typeof CLIENT_SCHEMAS, Body> = {
  hello: { t: "hello", v: [1, 2], ua: "sbtest/1.0", tk: true },
  auth: { t: "auth", u: "alice", d: 1, sig: bin(64) },
  resume: { t: "resume", u: "alice", d: 1, tk: bin(16), ts: TS, mac: bin(32), rx: false },
  enroll: { t: "enroll", u: "alice", code: "abcde-fghij-kmnpq-rstuv", pk: bin(32), sig: bin(64), name: "laptop" },
  link: { t: "link", u: "alice", pk: bin(32), sig: bin(64), name: "phone" },
  msg: { t: "msg", id: "m1", to: "bob", p: [[1, bin(10)], [2, bin(10), 77]], s: [[2, bin(10)]] },
  gmsg: { t: "gmsg", id: "m2", g: "#k3v9", p: bin(40) },
  ack: { t: "ack", q: [1, 2, 2 ** 32 + 7] },
  read: { t: "read", u: "bob", seq: 42 },
  pres: { t: "pres", to: "bob", s: "typing" },
  iq: { t: "iq", id: 7, op: "devices", a: { u: "bob" } },
  ping: { t: "ping", n: 3 },
  close: { t: "close", r: "client_quit", m: "bye", ra: 1000 },
  call: { t: "call", c: "c1", to: "bob", k: "offer", p: [[1, bin(10)]], td: 2, g: "#k3v9" },
};

const SERVER_EXAMPLES: Record<keyof typeof SERVER_SCHEMAS, Body> = {
  hello: { t: "hello", v: 1, sid: "sb-test", nonce: bin(32), mf: 65536, pi: 30, it: 90 },
  ready: { t: "ready", u: "alice", d: 1, ts: TS, tk: bin(16), tks: bin(32), tke: TS },
  linkcode: { t: "linkcode", code: "123-456", exp: TS + 300_000 },
  msg: { t: "msg", q: 2 ** 32 + 7, id: "m1", from: "alice", fd: 1, to: "bob", seq: 42, ts: TS, p: bin(10), sync: true },
  sent: { t: "sent", id: "m1", to: "bob", seq: 42, ts: TS },
  rcpt: { t: "rcpt", q: 12, k: "dlv", u: "bob", d: 1, w: "bob", seq: 42, id: "m1", ts: TS },
  gap: { t: "gap", q: 13, n: 3, ts: TS },
  pres: { t: "pres", u: "alice", d: 1, s: "paused" },
  pst: { t: "pst", u: "alice", online: false, ls: TS - (TS % 60_000) },
  evt: { t: "evt", q: 14, k: "grp", ts: TS, op: "add", g: "#k3v9", seq: 3, by: "alice", m: ["bob", "carol"], name: "team", u: "alice", d: 2, n: 5, c: "c1" },
  res: { t: "res", id: 7, ok: false, e: "unknown_op", m: "no such op" },
  pong: { t: "pong", n: 3 },
  err: { t: "err", e: "bad_field", m: "msg.to is required" },
  close: { t: "close", r: "try_again", m: "busy", ra: 5000 },
  redirect: { t: "redirect", host: "10.0.0.7", port: 5222, ttl: 3600 },
  call: { t: "call", c: "c1", u: "alice", d: 1, k: "stop", p: bin(10), w: "answered", g: "#k3v9", ts: TS },
};

const DIRECTIONS = [
  { name: "client", schemas: CLIENT_SCHEMAS as Schemas, examples: CLIENT_EXAMPLES as Record<string, Body>, check: validateClient as (b: unknown) => Checked },
  { name: "server", schemas: SERVER_SCHEMAS as Schemas, examples: SERVER_EXAMPLES as Record<string, Body>, check: validateServer as (b: unknown) => Checked },
];

const fields = (schemas: Schemas, kind: string) =>
  Object.entries((schemas as Record<string, Record<string, [FieldType, boolean]>>)[kind]!);

/** Values that are never acceptable for a field of this type. */
function wrongValues(type: FieldType): unknown[] {
  switch (type.k) {
    case "str":
      return [1, true, bin(3), ["a"], { a: 1 }];
    case "uint":
      return ["1", -1, 1.5, true, 2 ** 53, Number.NaN, 10n, bin(1), [1]];
    case "bool":
      return [1, 0, "true", bin(1)];
    case "bin":
      return ["x".repeat(type.len ?? 4), [1, 2], 5, { 0: 1 }];
    case "uints":
      return [1, "1", [-1], [1.5], ["1"], [null], bin(2), { 0: 1 }];
    case "payloads":
      return [
        1,
        bin(2),
        [[1]],
        [[1, bin(1), -3]],
        [[1, bin(1), "3"]],
        [[1, bin(1), 2 ** 32]],
        [[1, bin(1), 3, 4]],
        [["1", bin(1)]],
        [[0, bin(1)]],
        [[-1, bin(1)]],
        [[1.5, bin(1)]],
        [[2 ** 31, bin(1)]],
        [[1, "payload as str"]],
        [[1, [1, 2]]],
        [bin(1)],
      ];
    case "map":
      return [[], "x", 1, bin(2), true];
    case "strs":
      return ["bob", 1, [1], ["Not An Account"], bin(2), { 0: "bob" }];
    default:
      throw new Error(`test does not know field type ${type.k}`);
  }
}

function expectInvalid(result: { ok: true } | { ok: false; code: string; message: string }, code: string, messageStart?: string) {
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.code as string).toBe(code);
  if (messageStart) expect(result.message.startsWith(messageStart)).toBe(true);
}

for (const dir of DIRECTIONS) {
  describe(`${dir.name} schemas`, () => {
    test("every kind has an example, and only known kinds do", () => {
      expect(Object.keys(dir.examples).sort()).toEqual(Object.keys(dir.schemas).sort());
    });

    for (const kind of Object.keys(dir.schemas)) {
      const example = dir.examples[kind]!;
      describe(kind, () => {
        test("accepts the example, before and after a msgpack round trip", () => {
          expect(dir.check(example)).toEqual({ ok: true, stanza: example as never });
          const decoded = decodeBody(encodeBody(example));
          const r = dir.check(decoded);
          expect(r.ok).toBe(true);
          expect(decoded).toEqual(example);
        });

        test("accepts the example with every optional field left out, or nil", () => {
          const bare: Body = { ...example };
          const nils: Body = { ...example };
          for (const [name, [, required]] of fields(dir.schemas, kind)) {
            if (!required) {
              delete bare[name];
              nils[name] = null;
            }
          }
          expect(dir.check(bare).ok).toBe(true);
          expect(dir.check(nils).ok).toBe(true);
          expect(dir.check(decodeBody(encodeBody(nils))).ok).toBe(true);
        });

        test("ignores unknown extra fields", () => {
          expect(dir.check({ ...example, zz: 1, future: { x: [1] }, T: "x" }).ok).toBe(true);
        });

        for (const [name, [type, required]] of fields(dir.schemas, kind)) {
          if (required) {
            test(`rejects a missing or nil ${name}`, () => {
              const body = { ...example };
              delete body[name];
              expectInvalid(dir.check(body), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              expectInvalid(dir.check({ ...example, [name]: null }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
            });
          }

          test(`rejects ${name} of a wrong type`, () => {
            for (const v of wrongValues(type)) {
              expectInvalid(dir.check({ ...example, [name]: v }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
            }
          });

          if (type.k === "str") {
            test(`enforces the byte limits of ${name}`, () => {
              // A group id keeps its "#" so that only the length is wrong.
              const filled = (n: number) => (String(example[name]).startsWith("#") ? "#" + "a".repeat(n - 1) : (type.re ? "a" : "x").repeat(n));
              expectInvalid(dir.check({ ...example, [name]: filled(type.max! + 1) }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              if (!type.oneOf) {
                expect(dir.check({ ...example, [name]: filled(type.max!) }).ok).toBe(true);
              }
              if (type.min !== undefined || type.re || type.oneOf) {
                expectInvalid(dir.check({ ...example, [name]: "" }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              }
            });
          }
          if (type.k === "uint" && type.max !== undefined) {
            test(`enforces the range of ${name}`, () => {
              expect(dir.check({ ...example, [name]: type.max }).ok).toBe(true);
              expectInvalid(dir.check({ ...example, [name]: type.max! + 1 }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              if (type.min !== undefined) {
                expect(dir.check({ ...example, [name]: type.min }).ok).toBe(true);
                expectInvalid(dir.check({ ...example, [name]: type.min - 1 }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              }
            });
          }
          if (type.k === "bin" && type.len !== undefined) {
            test(`requires ${name} to be exactly ${type.len} bytes`, () => {
              for (const n of [0, type.len! - 1, type.len! + 1]) {
                expectInvalid(dir.check({ ...example, [name]: bin(n) }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              }
            });
          }
          if (type.k === "uints" || type.k === "payloads") {
            test(`enforces the entry count of ${name}`, () => {
              const entry = type.k === "uints" ? 1 : [1, bin(1)];
              const many = (n: number) => Array.from({ length: n }, () => entry);
              expect(dir.check({ ...example, [name]: many(type.max!) }).ok).toBe(true);
              expectInvalid(dir.check({ ...example, [name]: many(type.max! + 1) }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              if (type.min! > 0) expectInvalid(dir.check({ ...example, [name]: [] }), ErrorCode.BAD_FIELD, `${kind}.${name} `);
              else expect(dir.check({ ...example, [name]: [] }).ok).toBe(true);
            });
          }
        }
      });
    }
  });
}

describe("bodies that are not a stanza", () => {
  test("a body that is not a map is bad_frame", () => {
    for (const body of [null, undefined, 1, "hello", true, [], [{ t: "ping" }], bin(3), new Map([["t", "ping"]]), new Date(0)]) {
      expectInvalid(validateClient(body), ErrorCode.BAD_FRAME);
      expectInvalid(validateServer(body), ErrorCode.BAD_FRAME);
    }
  });

  test("a missing or non-string t is bad_field", () => {
    for (const t of [undefined, null, 1, true, bin(4), ["ping"], { ping: 1 }]) {
      expectInvalid(validateClient({ t, n: 1 }), ErrorCode.BAD_FIELD, "field t ");
    }
    expectInvalid(validateClient({ n: 1 }), ErrorCode.BAD_FIELD, "field t ");
  });

  test("an unknown kind is unknown_kind, including kinds of the other direction and Object.prototype names", () => {
    for (const t of ["nope", "", "PING", "ready", "sent", "rcpt", "res", "pong", "err", "linkcode", "constructor", "toString", "__proto__", "hasOwnProperty"]) {
      expectInvalid(validateClient({ t }), ErrorCode.UNKNOWN_KIND);
    }
    for (const t of ["auth", "enroll", "link", "ack", "read", "iq", "ping", "constructor", "valueOf"]) {
      expectInvalid(validateServer({ t }), ErrorCode.UNKNOWN_KIND);
    }
  });

  test("the id of the offending stanza is reported when it is a string or a number", () => {
    const r1 = validateClient({ t: "msg", id: "m9", to: "Bad Name", p: [[1, bin(1)]] });
    expect(r1).toMatchObject({ ok: false, code: ErrorCode.BAD_FIELD, id: "m9" });
    const r2 = validateClient({ t: "iq", id: 12, op: "" });
    expect(r2).toMatchObject({ ok: false, code: ErrorCode.BAD_FIELD, id: 12 });
    const r3 = validateClient({ t: "frobnicate", id: "x1" });
    expect(r3).toMatchObject({ ok: false, code: ErrorCode.UNKNOWN_KIND, id: "x1" });
    for (const id of [true, { a: 1 }, [1], bin(2), null]) {
      const r = validateClient({ t: "msg", id, to: "bob", p: [[1, bin(1)]] });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.id).toBeUndefined();
    }
  });
});

describe("field rules", () => {
  test("account names", () => {
    const good = ["a", "0", "alice", "bob.smith", "x-y_z", "a1.2-3_4", "9lives", "a".repeat(32)];
    const bad = ["", "A", "Alice", "-a", ".a", "_a", "a b", "a@b", "ä", "a\n", "\na", "a/b", "a".repeat(33), "é".repeat(2)];
    for (const u of good) {
      expect(ACCOUNT_NAME_RE.test(u)).toBe(true);
      expect(validateClient({ t: "auth", u, d: 1, sig: bin(64) }).ok).toBe(true);
      expect(validateClient({ t: "msg", id: "m", to: u, p: [[1, bin(1)]] }).ok).toBe(true);
    }
    for (const u of bad) {
      expectInvalid(validateClient({ t: "auth", u, d: 1, sig: bin(64) }), ErrorCode.BAD_FIELD, "auth.u ");
      expectInvalid(validateClient({ t: "msg", id: "m", to: u, p: [[1, bin(1)]] }), ErrorCode.BAD_FIELD, "msg.to ");
      expectInvalid(validateServer({ t: "ready", u, d: 1, ts: 1 }), ErrorCode.BAD_FIELD, "ready.u ");
    }
    expect(LIMITS.accountName).toBe(32);
  });

  test("string limits count UTF-8 bytes, not UTF-16 units", () => {
    const base = { t: "msg", to: "bob", p: [[1, bin(1)]] };
    expect(validateClient({ ...base, id: "é".repeat(LIMITS.clientId / 2) }).ok).toBe(true); // 64 bytes
    expectInvalid(validateClient({ ...base, id: "é".repeat(LIMITS.clientId / 2) + "x" }), ErrorCode.BAD_FIELD, "msg.id ");
    expect(validateClient({ ...base, id: "€".repeat(21) + "x" }).ok).toBe(true); // 64 bytes
    expectInvalid(validateClient({ ...base, id: "€".repeat(22) }), ErrorCode.BAD_FIELD, "msg.id "); // 66 bytes
    expect(validateClient({ ...base, id: "😀".repeat(16) }).ok).toBe(true); // 64 bytes
    expectInvalid(validateClient({ ...base, id: "😀".repeat(16) + "x" }), ErrorCode.BAD_FIELD, "msg.id ");
  });

  test("binary fields must be msgpack bin, not str, also after decoding", () => {
    const asStr = decodeBody(encodeBody({ t: "auth", u: "alice", d: 1, sig: "a".repeat(64) }));
    expectInvalid(validateClient(asStr), ErrorCode.BAD_FIELD, "auth.sig ");
    const payloadStr = decodeBody(encodeBody({ t: "msg", id: "m", to: "bob", p: [[1, "text"]] }));
    expectInvalid(validateClient(payloadStr), ErrorCode.BAD_FIELD, "msg.p ");
    const nonceStr = decodeBody(encodeBody({ ...SERVER_EXAMPLES.hello, nonce: "n".repeat(32) }));
    expectInvalid(validateServer(nonceStr), ErrorCode.BAD_FIELD, "hello.nonce ");
  });

  test("enumerated strings", () => {
    for (const s of ["typing", "paused"]) expect(validateClient({ t: "pres", to: "bob", s }).ok).toBe(true);
    for (const s of ["Typing", "online", "", "typing "]) expectInvalid(validateClient({ t: "pres", to: "bob", s }), ErrorCode.BAD_FIELD, "pres.s ");
    for (const k of ["dlv", "read", "exp"]) expect(validateServer({ ...SERVER_EXAMPLES.rcpt, k }).ok).toBe(true);
    for (const k of ["DLV", "seen", ""]) expectInvalid(validateServer({ ...SERVER_EXAMPLES.rcpt, k }), ErrorCode.BAD_FIELD, "rcpt.k ");
  });

  test("integers: any integral number up to 2^53-1, no fractions, no negatives", () => {
    for (const q of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 7, Number.MAX_SAFE_INTEGER]) {
      expect(validateClient({ t: "ack", q: [q] }).ok).toBe(true);
      expect(validateClient({ t: "read", u: "bob", seq: q }).ok).toBe(true);
    }
    for (const q of [-1, 0.5, 2 ** 53, Infinity, -0.5]) {
      expectInvalid(validateClient({ t: "ack", q: [q] }), ErrorCode.BAD_FIELD, "ack.q ");
      expectInvalid(validateClient({ t: "read", u: "bob", seq: q }), ErrorCode.BAD_FIELD, "read.seq ");
    }
  });

  test("iq.a must be a plain map", () => {
    expect(validateClient({ t: "iq", id: 1, op: "devices", a: {} }).ok).toBe(true);
    expect(validateClient({ t: "iq", id: 1, op: "devices", a: Object.create(null) }).ok).toBe(true);
    for (const a of [[], new Map(), new Date(0), bin(1), "x"]) {
      expectInvalid(validateClient({ t: "iq", id: 1, op: "devices", a }), ErrorCode.BAD_FIELD, "iq.a ");
    }
  });

  test("validate with an arbitrary schema table", () => {
    expect(validate({ t: "x" }, { x: {} }).ok).toBe(true);
    expectInvalid(validate({ t: "y" }, { x: {} }), ErrorCode.UNKNOWN_KIND);
  });
});

test("a nil optional field is dropped as absent, so handlers never see null", () => {
  const v = validateClient({ t: "ping", n: null });
  expect(v.ok).toBe(true);
  if (v.ok) expect("n" in v.stanza).toBe(false);
  const m = validateClient({ t: "msg", id: "x", to: "bob", p: [[1, new Uint8Array(1)]], s: null });
  expect(m.ok && !("s" in m.stanza)).toBe(true);
});

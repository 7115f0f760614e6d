/**
 * docs/PROTOCOL.md §10 against the code: every `vector` block of the spec is
 * read from the spec itself, and must be what the codec writes and must read
 * back to the same stanza. Regenerate the blocks with
 * `bun tools/protocol-vectors.ts` when an encoding changes on purpose.
 */
import { describe, expect, test } from "bun:test";
import { createHmac, createPublicKey, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { proofTranscript, resumeTranscript, type ProofPurpose } from "../../src/protocol/auth.ts";
import { decodeBody, encodeFrame } from "../../src/protocol/codec.ts";
import { FrameDecoder } from "../../src/protocol/frame.ts";
import { validateClient, validateServer } from "../../src/protocol/stanzas.ts";
import {
  ed25519FromSeed,
  ed25519Sign,
  fillSpec,
  FRAME_VECTORS,
  renderValue,
  SPKI_ED25519_PREFIX,
  toHex,
  TRANSCRIPT_VECTORS,
} from "../../tools/protocol-vectors.ts";

const SPEC_PATH = join(import.meta.dir, "../../docs/PROTOCOL.md");
const SPEC = readFileSync(SPEC_PATH, "utf8");

/** ```vector NAME blocks: `key: value` lines; lines without a key continue the previous one (hex dumps). */
function parseVectors(md: string): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  for (const m of md.matchAll(/^```vector ([a-z0-9-]+)[ \t]*\r?\n([\s\S]*?)^```[ \t]*$/gm)) {
    const name = m[1]!;
    if (out.has(name)) throw new Error(`PROTOCOL.md: vector ${name} appears twice`);
    const fields: Record<string, string> = {};
    let last: string | null = null;
    for (const line of m[2]!.split(/\r?\n/)) {
      if (line.trim() === "") continue;
      const kv = /^([a-z][a-z0-9-]*):[ \t]*(.*)$/.exec(line);
      if (kv) {
        last = kv[1]!;
        fields[last] = kv[2]!.trim();
      } else if (last !== null) {
        fields[last] += " " + line.trim();
      } else {
        throw new Error(`PROTOCOL.md: vector ${name}: stray line ${JSON.stringify(line)}`);
      }
    }
    out.set(name, fields);
  }
  return out;
}

function hex(s: string | undefined): Uint8Array {
  if (s === undefined) throw new Error("missing hex field");
  const clean = s.replace(/\s+/g, "");
  if (!/^([0-9a-f]{2})*$/.test(clean)) throw new Error(`not lowercase hex: ${s.slice(0, 40)}`);
  return Uint8Array.from((clean.match(/../g) ?? []).map((x) => parseInt(x, 16)));
}

const VECTORS = parseVectors(SPEC);
const get = (name: string) => {
  const v = VECTORS.get(name);
  if (!v) throw new Error(`PROTOCOL.md has no \`\`\`vector ${name} block`);
  return v;
};

/** The transcript as §4.2 of the spec words it, written independently of src/protocol/auth.ts. */
function transcriptPerSpec(purpose: string, sid: string, nonce: Uint8Array, account: string, device: number): Uint8Array {
  const te = new TextEncoder();
  const dev = new Uint8Array(4);
  new DataView(dev.buffer).setUint32(0, device, false);
  const parts = [te.encode("switchboard/1/" + purpose), [0], te.encode(sid), [0], nonce, [0], te.encode(account), [0], dev];
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

describe("PROTOCOL.md test vectors", () => {
  test("the spec holds exactly the generated vectors", () => {
    const expected = [...FRAME_VECTORS.map((v) => v.name), ...TRANSCRIPT_VECTORS.map((v) => v.name), "ed25519-signature", "resume-mac"];
    expect([...VECTORS.keys()].sort()).toEqual(expected.sort());
  });

  test("the generated sections of the spec are up to date (bun tools/protocol-vectors.ts --write)", () => {
    expect(fillSpec(SPEC) === SPEC).toBe(true);
  });

  for (const v of FRAME_VECTORS) {
    describe(`frame ${v.name}`, () => {
      test("the spec shows the value and the direction", () => {
        const block = get(v.name);
        expect(block.dir).toBe(v.dir);
        expect(block.value).toBe(renderValue(v.value));
      });

      test("encodeFrame writes exactly the spec's bytes", () => {
        expect(toHex(encodeFrame(v.value))).toBe(toHex(hex(get(v.name).frame)));
      });

      test("the spec's bytes read back to the same valid stanza", () => {
        const bytes = hex(get(v.name).frame);
        const bodies: Uint8Array[] = [];
        const dec = new FrameDecoder();
        dec.feed(bytes, (b) => bodies.push(b.slice()));
        expect(bodies.length).toBe(1);
        expect(dec.pending).toBe(false);
        const body = decodeBody(bodies[0]!);
        const r = v.dir === "c2s" ? validateClient(body) : validateServer(body);
        if (!r.ok) throw new Error(`${v.name}: ${r.code}: ${r.message}`);
        expect(body).toEqual(v.value);
      });
    });
  }

  for (const v of TRANSCRIPT_VECTORS) {
    test(`transcript ${v.name}`, () => {
      const block = get(v.name);
      const nonce = hex(block.nonce);
      const device = Number(block.device);
      expect([block.purpose, block.sid, toHex(nonce), block.account, device]).toEqual([
        v.purpose,
        v.sid,
        toHex(v.nonce),
        v.account,
        v.device,
      ]);
      const want = toHex(hex(block.transcript));
      expect(toHex(proofTranscript(block.purpose as ProofPurpose, block.sid!, nonce, block.account!, device))).toBe(want);
      expect(toHex(transcriptPerSpec(block.purpose!, block.sid!, nonce, block.account!, device))).toBe(want);
    });
  }

  test("ed25519 signature vector", () => {
    const block = get("ed25519-signature");
    const seed = hex(block.seed);
    const transcript = hex(block.transcript);
    const signature = hex(block.signature);
    const publicKey = hex(block["public-key"]);
    expect(seed.length).toBe(32);
    expect(publicKey.length).toBe(32);
    expect(signature.length).toBe(64);
    // It signs the auth transcript vector.
    expect(toHex(transcript)).toBe(toHex(hex(get("auth-transcript").transcript)));
    // The key pair follows from the seed, and Ed25519 is deterministic.
    expect(toHex(ed25519FromSeed(seed).publicKey)).toBe(toHex(publicKey));
    expect(toHex(ed25519Sign(seed, transcript))).toBe(toHex(signature));
    // And it verifies with nothing but the raw public key, as a server does.
    const pub = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, publicKey]), format: "der", type: "spki" });
    expect(verify(null, transcript, pub, signature)).toBe(true);
    const other = transcript.slice();
    other[other.length - 1] = 2; // device 2 instead of 1
    expect(verify(null, other, pub, signature)).toBe(false);
  });

  test("resume mac vector", () => {
    const block = get("resume-mac");
    const te = new TextEncoder();
    const ts = new Uint8Array(8);
    new DataView(ts.buffer).setBigUint64(0, BigInt(block.ts!), false);
    const dev = new Uint8Array(4);
    new DataView(dev.buffer).setUint32(0, Number(block.device), false);
    // The transcript as §4.11 words it, written independently of src/protocol/auth.ts.
    const perSpec = Uint8Array.from(
      [te.encode("switchboard/1/resume"), [0], te.encode(block.sid!), [0], te.encode(block.account!), [0], dev, ts].flatMap((p) => [...p]),
    );
    expect(toHex(perSpec)).toBe(toHex(hex(block.transcript)));
    expect(toHex(resumeTranscript(block.sid!, block.account!, Number(block.device), Number(block.ts)))).toBe(toHex(perSpec));
    const mac = createHmac("sha256", hex(block.secret)).update(perSpec).digest();
    expect(toHex(mac)).toBe(toHex(hex(block.mac)));
    // The resume frame vector carries this ticket and mac.
    const frame = FRAME_VECTORS.find((v) => v.name === "resume")!.value;
    expect(toHex(frame.tk as Uint8Array)).toBe(toHex(hex(block.ticket)));
    expect(toHex(frame.mac as Uint8Array)).toBe(toHex(mac));
  });
});

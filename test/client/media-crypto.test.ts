/**
 * The attachment blob format (src/client/media.ts, docs/E2E.md): the streaming
 * encryption gives exactly the bytes of Signal's scheme computed in one piece
 * here with node:crypto (IV || AES-256-CBC(plaintext || zeros, PKCS7) ||
 * HMAC-SHA256(iv || ct)), whatever the chunking of the input; the size buckets;
 * the descriptor checks and the file names a sender cannot abuse.
 */
import { describe, expect, test } from "bun:test";
import { createCipheriv, createHash, createHmac, randomBytes } from "node:crypto";
import { blobSize, encryptBlob, largestFile, paddedSize } from "../../src/client/media.ts";
import { parseAttachment, safeFileName } from "../../src/client/media-download.ts";
import { prng } from "../helpers/prng.ts";

const SEED = Number(process.env.SB_SEED ?? Date.now() % 1_000_000);

/** Signal's scheme in one piece, written out independently of media.ts. */
function reference(plain: Uint8Array, key: Uint8Array, iv: Uint8Array): { blob: Buffer; digest: Buffer } {
  const padded = Buffer.concat([plain, Buffer.alloc(paddedSize(plain.length) - plain.length)]);
  const c = createCipheriv("aes-256-cbc", key.subarray(0, 32), iv);
  const ct = Buffer.concat([c.update(padded), c.final()]);
  const mac = createHmac("sha256", key.subarray(32)).update(iv).update(ct).digest();
  const blob = Buffer.concat([iv, ct, mac]);
  return { blob, digest: createHash("sha256").update(blob).digest() };
}

async function* chunks(b: Uint8Array, rnd: () => number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; ) {
    const n = 1 + Math.floor(rnd() * 70_000);
    yield b.subarray(i, i + n);
    i += n;
  }
}

describe(`attachment blobs (seed ${SEED}; rerun with SB_SEED=${SEED})`, () => {
  test("size buckets: Signal's values (computed separately), never below the size, at most 5% above", () => {
    // From Python: max(541, floor(1.05 ** ceil(log(s) / log(1.05)))).
    const known: [number, number][] = [[0, 541], [1, 541], [541, 541], [542, 568], [1000, 1020], [4096, 4201], [1 << 20, 1093831], [100 << 20, 107335738]];
    for (const [s, p] of known) expect({ s, p: paddedSize(s) }).toEqual({ s, p });
    const rnd = prng(SEED);
    const buckets = new Set<number>();
    for (let i = 0; i < 20_000; i++) {
      const s = Math.floor(rnd() ** 3 * (100 << 20));
      const p = paddedSize(s);
      expect(p).toBeGreaterThanOrEqual(s);
      if (s > 541) expect(p).toBeLessThanOrEqual(Math.ceil(s * 1.05));
      buckets.add(p);
    }
    // Up to 100 MiB there are only about 260 buckets in all: a size tells little.
    expect(buckets.size).toBeLessThan(270);
    expect(() => paddedSize(-1)).toThrow();
    // The largest file a 100 MiB blob limit takes (from Python, the same search): one byte more pads past it.
    expect(largestFile(100 << 20)).toBe(102_224_512);
    expect(blobSize(102_224_512)).toBeLessThanOrEqual(100 << 20);
    expect(blobSize(102_224_513)).toBeGreaterThan(100 << 20);
  });

  test("the streamed blob is byte for byte the scheme's, with its digest, for sizes around the bucket and block edges", async () => {
    const rnd = prng(SEED + 1);
    for (const size of [0, 1, 15, 16, 540, 541, 542, 567, 568, 569, 4096, 200_003]) {
      const plain = randomBytes(size);
      const key = randomBytes(64);
      const iv = randomBytes(16);
      const out = { digest: null as Uint8Array | null, size: 0 };
      const parts: Uint8Array[] = [];
      for await (const b of encryptBlob(chunks(plain, rnd), key, iv, out, size)) parts.push(Buffer.from(b));
      const got = Buffer.concat(parts);
      const ref = reference(plain, key, iv);
      expect({ size, len: got.length }).toEqual({ size, len: blobSize(size) });
      expect(got.equals(ref.blob)).toBe(true);
      expect(Buffer.from(out.digest!).equals(ref.digest)).toBe(true);
      expect(out.size).toBe(size);
    }
  });

  test("a file that changes size while it is encrypted is refused", async () => {
    const key = randomBytes(64);
    const iv = randomBytes(16);
    const run = async (actual: number, expect_: number) => {
      for await (const _ of encryptBlob(chunks(randomBytes(actual), prng(SEED)), key, iv, { digest: null, size: 0 }, expect_));
    };
    await expect(run(1000, 999)).rejects.toThrow(/grew/);
    await expect(run(998, 999)).rejects.toThrow(/shrank/);
  });

  test("descriptors from messages are checked; saved names stay inside the folder", () => {
    const good = { id: "A".repeat(22), url: "http://127.0.0.1:1/media/" + "A".repeat(22), key: Buffer.alloc(64).toString("base64"), digest: Buffer.alloc(32).toString("base64"), size: 5, type: "text/plain", name: "a.txt" };
    expect(parseAttachment(good)).toEqual(good);
    for (const bad of [
      { ...good, id: "../../x" },
      { ...good, url: "file:///etc/passwd" },
      { ...good, key: Buffer.alloc(32).toString("base64") },
      { ...good, digest: "x" },
      { ...good, size: -1 },
      { ...good, size: 1.5 },
      { ...good, name: 7 },
      null,
      "att",
    ]) expect(parseAttachment(bad)).toBeNull();
    expect(safeFileName({ ...good, name: "../../.bashrc" })).toBe("bashrc");
    expect(safeFileName({ ...good, name: "C:\\x\\evil.exe" })).toBe("evil.exe");
    expect(safeFileName({ ...good, name: "a\u0000b\n.txt" })).toBe("ab.txt");
    expect(safeFileName({ ...good, name: ".." })).toBe("attachment-AAAAAAAA");
    expect(safeFileName({ id: good.id, type: "x" })).toBe("attachment-AAAAAAAA");
  });
});

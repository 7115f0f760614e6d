/**
 * The in-memory attachment code (src/client/media-web.ts) against the
 * streaming one (media.ts): for the same key, IV and plaintext both make the
 * same blob byte for byte, on node:crypto and on WebCrypto; and openBlob
 * refuses a blob whose length, digest, MAC or padding is wrong.
 */
import { describe, expect, test } from "bun:test";
import { asyncOf, e2eCrypto } from "../../src/client/crypto/index.ts";
import { nodeCrypto } from "../../src/client/crypto/node.ts";
import { webCrypto } from "../../src/client/crypto/webcrypto.ts";
import { encryptBlob, blobSize, type Attachment } from "../../src/client/media.ts";
import { openBlob, sealBlob } from "../../src/client/media-web.ts";
import { toBase64 } from "../../src/client/media-format.ts";

async function streamed(pt: Uint8Array, key: Uint8Array, iv: Uint8Array): Promise<{ blob: Uint8Array; digest: Uint8Array }> {
  const out = { digest: null as Uint8Array | null, size: 0 };
  const parts: Uint8Array[] = [];
  async function* src() {
    for (let i = 0; i < pt.length; i += 1000) yield pt.subarray(i, i + 1000);
  }
  for await (const b of encryptBlob(src(), key, iv, out)) parts.push(new Uint8Array(b));
  return { blob: new Uint8Array(Buffer.concat(parts)), digest: out.digest! };
}

for (const p of [asyncOf(nodeCrypto), webCrypto]) {
  describe(`media-web on ${p.name}`, () => {
    const cx = e2eCrypto(p);
    test("the same blob as media.ts's streaming encryption, for sizes around the padding buckets", async () => {
      for (const size of [0, 1, 540, 541, 542, 4095, 70_001]) {
        const pt = cx.randomBytes(size), key = cx.randomBytes(64), iv = cx.randomBytes(16);
        const mine = await sealBlob(cx, pt, key, iv);
        const theirs = await streamed(pt, key, iv);
        expect(`${size}: ${mine.blob.length}`).toBe(`${size}: ${blobSize(size)}`);
        expect(Buffer.from(mine.blob).equals(Buffer.from(theirs.blob))).toBe(true);
        expect(Buffer.from(mine.digest).equals(Buffer.from(theirs.digest))).toBe(true);
        const att: Attachment = { id: "x".repeat(16), url: "http://127.0.0.1/", key: toBase64(key), digest: toBase64(mine.digest), size, type: "application/octet-stream" };
        expect(Buffer.from(await openBlob(cx, att, theirs.blob)).equals(Buffer.from(pt))).toBe(true);
      }
    });

    test("a blob with the wrong length, digest, MAC or padding is refused", async () => {
      const pt = new TextEncoder().encode("secret"), key = cx.randomBytes(64), iv = cx.randomBytes(16);
      const { blob, digest } = await sealBlob(cx, pt, key, iv);
      const att: Attachment = { id: "x".repeat(16), url: "http://127.0.0.1/", key: toBase64(key), digest: toBase64(digest), size: pt.length, type: "text/plain" };
      const code = (b: Uint8Array, a = att) => openBlob(cx, a, b).then(() => "opened", (e: { code?: string }) => e.code);
      expect(await code(blob.subarray(1))).toBe("bad_length");
      const flipped = blob.slice();
      flipped[20]! ^= 1;
      expect(await code(flipped)).toBe("bad_digest");
      // Digest recomputed over the tampered blob (a server cannot, the digest is in the E2E message): the MAC still catches it.
      expect(await code(flipped, { ...att, digest: toBase64(await cx.sha256(flipped)) })).toBe("bad_mac");
      // The sender's own blob with a claimed size that cuts into the plaintext: padding is not zeros.
      expect(await code(blob, { ...att, size: 3 })).toBe("bad_padding");
    });
  });
}

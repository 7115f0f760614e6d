/**
 * The asynchronous crypto interface (src/client/crypto/async.ts) and its two
 * implementations held to the same known answers (test/client/crypto-vectors.ts):
 * node:crypto through `asyncOf`, and WebCrypto (src/client/crypto/webcrypto.ts)
 * in Bun and, bundled for the browser, in headless Chromium (Debian's chromium).
 * Across implementations: what one seals or signs, the other opens or verifies.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { asyncOf, type AsyncCryptoProvider } from "../../src/client/crypto/async.ts";
import { nodeCrypto } from "../../src/client/crypto/node.ts";
import { webCrypto } from "../../src/client/crypto/webcrypto.ts";
import { failures } from "../helpers/cases.ts";
import { launchChromium, openTab, servePageOf } from "../helpers/chromium.ts";
import { ROOT } from "../helpers/harness.ts";
import { knownAnswers, type Answer } from "./crypto-vectors.ts";


for (const p of [asyncOf(nodeCrypto), webCrypto] as AsyncCryptoProvider[]) {
  test(`${p.name} in Bun: every known answer`, async () => {
    const answers = await knownAnswers(p);
    expect(answers.length).toBeGreaterThanOrEqual(14);
    expect(failures(answers)).toEqual([]);
  });
}

describe("across implementations", () => {
  const node = asyncOf(nodeCrypto);
  test("X25519 agrees, signatures verify, seals open either way", async () => {
    for (const [a, b] of [[node, webCrypto], [webCrypto, node]] as const) {
      const ka = await a.generateDH(), kb = await b.generateDH();
      expect(Buffer.from(await a.dh(ka.priv, kb.pub)).toString("hex")).toBe(Buffer.from(await b.dh(kb.priv, ka.pub)).toString("hex"));
      const s = await a.generateSigning();
      expect(Buffer.from((await b.signingFromSeed(s.priv)).pub).equals(Buffer.from(s.pub))).toBe(true);
      expect(await b.verify(s.pub, new Uint8Array([1, 2, 3]), await a.sign(s.priv, new Uint8Array([1, 2, 3])))).toBe(true);
      const key = a.randomBytes(32), nonce = a.randomBytes(12), ad = new Uint8Array([9]);
      const opened = await b.aeadDecrypt(key, nonce, await a.aeadEncrypt(key, nonce, new TextEncoder().encode("both ways"), ad), ad);
      expect(new TextDecoder().decode(opened!)).toBe("both ways");
    }
  });
});

describe("WebCrypto in Chromium", () => {
  let browser: Browser | null = null;
  let page: ReturnType<typeof Bun.serve> | null = null;
  beforeAll(async () => {
    browser = await launchChromium();
    page = await servePageOf(
      `import { webCrypto } from ${JSON.stringify(join(ROOT, "src/client/crypto/webcrypto.ts"))};\nimport { knownAnswers } from ${JSON.stringify(join(ROOT, "test/client/crypto-vectors.ts"))};\n(globalThis as any).run = () => knownAnswers(webCrypto);\n`,
      "crypto vectors",
    );
  });
  afterAll(async () => {
    await browser?.close();
    page?.stop(true);
  });

  test("every known answer, on the browser's own crypto.subtle (a secure context: 127.0.0.1)", async () => {
    const { tab, logs } = await openTab(browser!, `http://127.0.0.1:${page!.port}/`, "run");
    let answers: Answer[];
    try {
      answers = await tab.evaluate(() => (globalThis as any).run());
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${logs.join("\n")}`);
    }
    expect(answers.length).toBeGreaterThanOrEqual(14);
    expect(failures(answers)).toEqual([]);
  });
});

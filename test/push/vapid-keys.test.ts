/**
 * `switchboard push vapid-keys` (a subprocess): its text is a [push.webpush]
 * block that Bun's TOML reader takes, and the two keys are a pair (the
 * public point is the private scalar's); `--json` the same. And
 * generateVapidKeys always gives a 32-byte scalar (node:crypto drops leading
 * zero bytes, about 1 key in 256; 2 000 keys here meet one with about 99.96 %
 * odds).
 */
import { expect, test } from "bun:test";
import { createECDH } from "node:crypto";
import { join } from "node:path";
import { BUN, ROOT } from "../helpers/harness.ts";
import { generateVapidKeys } from "../../src/core/push/webpush.ts";
import { fromB64url } from "../../src/core/push/jwt.ts";

async function cli(args: string[]): Promise<string> {
  const p = Bun.spawn([BUN, join(ROOT, "src/cli/main.ts"), ...args], { stdout: "pipe", stderr: "pipe" });
  const [o, e, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  expect({ code, e }).toEqual({ code: 0, e: "" });
  return o;
}

function isPair(pub: string, priv: string): boolean {
  const d = fromB64url(priv);
  expect(d.length).toBe(32);
  const e = createECDH("prime256v1");
  e.setPrivateKey(d);
  return Buffer.from(e.getPublicKey()).equals(Buffer.from(fromB64url(pub)));
}

test("push vapid-keys prints a [push.webpush] block with a matching pair; --json the same keys as fields", async () => {
  const toml = Bun.TOML.parse(await cli(["push", "vapid-keys"])) as { push: { webpush: { vapid_public: string; vapid_private: string; subject: string } } };
  const w = toml.push.webpush;
  expect(fromB64url(w.vapid_public).length).toBe(65);
  expect(isPair(w.vapid_public, w.vapid_private)).toBe(true);
  expect(w.subject).toStartWith("mailto:");
  const j = JSON.parse(await cli(["push", "vapid-keys", "--json"])) as { vapid_public: string; vapid_private: string };
  expect(isPair(j.vapid_public, j.vapid_private)).toBe(true);
  expect(j.vapid_public).not.toBe(w.vapid_public); // fresh each time
});

test("generateVapidKeys: a 32-byte scalar every time, the pair matching", () => {
  for (let i = 0; i < 2000; i++) {
    const k = generateVapidKeys();
    if (fromB64url(k.privateKey).length !== 32 || !isPair(k.publicKey, k.privateKey)) throw new Error(`key ${i}: ${JSON.stringify(k)}`);
  }
});

/** SecureClient.whenPublished() settles with the server's refusal instead of waiting for ever. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type TestServer } from "../helpers/harness.ts";
import { ServerError } from "../../src/client/client.ts";
import { SecureClient } from "../../src/client/secure.ts";

let srv: TestServer;
let dir: string;
beforeAll(async () => {
  srv = await startServer({ args: ["--keys-max-otk", "10"] }); // fewer one-time prekeys than the client uploads at once
  dir = mkdtempSync(join(tmpdir(), "sb-e2e-refused-"));
});
afterAll(() => {
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a publication the server refuses rejects whenPublished() with the server's error", async () => {
  const kf = await srv.newDevice("refused");
  const errors: Error[] = [];
  let s!: SecureClient;
  const c = await srv.client(kf, {
    setup: async (c) => {
      s = await SecureClient.open(c, { statePath: join(dir, "refused.e2e"), otkTarget: 50 });
      s.on("error", (e) => errors.push(e));
    },
  });
  const e = await s.whenPublished().then(
    () => null,
    (e: Error) => e,
  );
  expect(e).toBeInstanceOf(ServerError);
  expect((e as ServerError).code).toBe("too_many_keys");
  expect(errors.map((x) => (x as ServerError).code)).toEqual(["too_many_keys"]);
  await c.close();
});

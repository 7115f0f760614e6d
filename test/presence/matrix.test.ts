/** The full privacy matrix (matrix.ts) on one node: every target and viewer on the same server. */
import { afterAll, beforeAll, test } from "bun:test";
import { startServer, type TestServer } from "../helpers/harness.ts";
import { rawLogin } from "../wire/util.ts";
import { MATRIX_ARGS, runMatrix } from "./matrix.ts";

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer({ args: MATRIX_ARGS });
});
afterAll(() => srv?.cleanup());

test("policy × reciprocity × contact × block: no forbidden field in any frame, every allowed one arrives; typing only where allowed", async () => {
  await runMatrix({ target: (i) => `t${i}`, viewer: (i) => `v${i}`, login: async (a) => rawLogin(srv, await srv.newDevice(a)) });
}, 120_000);

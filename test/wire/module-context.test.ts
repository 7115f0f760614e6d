/**
 * What a module is given (src/core/context.ts, ModuleContext), seen from
 * inside a real module of a real server: narrowed views and the module's own
 * options, nothing of core's objects (no config, stores, queue, full Hooks or
 * Registry). And the loader refuses a module that imports src/store/.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, MAIN, ROOT, startServer, type TestServer } from "../helpers/harness.ts";
import { modulesWith } from "../helpers/modules-copy.ts";

setDefaultTimeout(120_000); // bounds on waiting for subprocesses, not timing assertions

const tmp = mkdtempSync(join(tmpdir(), "sb-modctx-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The keys module also answers iq `keys.ctx` with what its ctx holds. */
const CTX = `[{ iq: "keys.ctx", handle: () => ({ ok: true, r: {
  ctx: Object.keys(ctx).sort(), options: ctx.options, queues: Object.keys(ctx.queues).sort(),
  registry: Object.keys(ctx.registry).sort(), push: Object.keys(ctx.push).sort(), hooks: Object.keys(ctx.hooks).sort(), directory: Object.keys(ctx.directory).sort(), facts: Object.keys(ctx.facts).sort(),
} }) }]`;

describe("a module's context", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startServer({ args: ["--modules-dir", modulesWith(join(tmp, "ctx"), "keys", "test/wire/module-context.test.ts", CTX), "--keys-max-otk", "7"] });
  });
  afterAll(() => srv?.cleanup());

  test("narrowed views and its own config block as options; no config, stores, queue, Hooks or Registry", async () => {
    const c = await srv.client(await srv.newDevice("ctxuser"));
    const r = await c.request("keys.ctx");
    expect(r.ctx).toEqual(["accept", "database", "directory", "facts", "hooks", "log", "metrics", "options", "peers", "push", "queues", "registry", "sendError", "seqs", "shared", "storage", "trace"]); // peers: a cluster's home of an account and presence items (inert on one node); storage: fault and healthy, a module reporting its file's disk faults
    expect(r.push).toEqual(["checkEndpoint", "configured", "connected", "forget", "ring", "setPolicy", "wake"]); // the push service's rules seam, not the service
    expect(r.options).toEqual({ maxOtk: 7, lowOtk: 10, fetchRate: 60, fetchBurst: 100 });
    expect(r.queues).toEqual(["dropDevice", "expireEvery", "maxBytes", "maxMessages", "retention", "usage"]);
    expect(r.registry).toEqual(["devices", "online", "sessionsOf"]);
    expect(r.hooks).toEqual(["check", "run"]); // run a hook; ask the contact rule (Hooks.check)
    expect(r.directory).toEqual(["deviceIds", "devices", "exists", "keyVersion", "ready", "revoke", "setKeyVersion"]); // not its store
    expect(r.facts).toEqual(["changed", "msg", "receipt", "receiptIds"]); // a peer's facts kept per connection (src/core/facts.ts), not PeerFacts itself
    c.close();
  });
});

describe("a module that imports src/store/", () => {
  test("the server does not start; the message names the file and the fix", async () => {
    const dir = join(tmp, "bad", "modules");
    cpSync(join(ROOT, "src/modules"), dir, { recursive: true });
    mkdirSync(join(dir, "sneaky"), { recursive: true });
    writeFileSync(
      join(dir, "sneaky", "index.ts"),
      `import { SqliteAccountStore } from "../../store/accounts.ts";
export default { name: "sneaky", version: "1", start: () => { void SqliteAccountStore; return []; } };
`,
    );
    const dataDir = join(tmp, "bad", "data");
    const p = Bun.spawn([BUN, MAIN, "serve", "--data-dir", dataDir, "--modules-dir", dir, "--tcp-port", "0", "--tls-port", "0", "--http-port", "0"], { stdout: "ignore", stderr: "pipe" });
    const [stderr, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
    expect(code).toBe(1);
    expect(stderr).toContain("module sneaky");
    expect(stderr).toContain("imports ../../store/accounts.ts (src/store/accounts.ts): a module never imports src/store/; keep its data in a store of its own on ctx.database(name, schema)");
  });
});

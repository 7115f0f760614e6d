/**
 * The SDK's attachments over an HTTPS blob URL (http.tls_port, the server's development certificate) trust what
 * the protocol connection trusts (MediaTls, docs/E2E.md §12 "TLS"): a client connected over TLS with `{ ca,
 * serverName }` uploads a file and a Uint8Array and downloads both (to a file and into memory) with no option of
 * their own; one connected with `{ rejectUnauthorized: false }` accepts the certificate for its media too; a client
 * over plain TCP, with no `tls`, fails at once with the MediaError `tls` (nothing saved) and succeeds when the
 * transfer is given `tls: { ca }`.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { freePort } from "../wire/util.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { ClientOptions, SwitchboardClient } from "../../src/client/client.ts";
import { MediaError, SecureClient, type SecureAttachment } from "../../src/client/secure.ts";

setDefaultTimeout(120_000); // a bound on waiting for a server, not a timing assertion

let srv: TestServer;
let port: number;
let work: string;
beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sb-media-tls-"));
  port = await freePort();
  srv = await startServer({ args: ["--http-tls-port", String(port)] });
});
afterAll(() => (srv?.cleanup(), rmSync(work, { recursive: true, force: true })));

interface Dev {
  c: SwitchboardClient;
  s: SecureClient;
  got: SecureAttachment[];
}

async function secure(kf: KeyFile, o: Partial<ClientOptions> & { tlsTransport?: boolean }): Promise<Dev> {
  const c = await srv.client(kf, o);
  const d: Dev = { c, s: await SecureClient.open(c, { statePath: join(work, `${kf.account}-${kf.device}-${randomBytes(4).toString("hex")}.e2e`), otkTarget: 10 }), got: [] };
  d.s.on("attachment", (a) => d.got.push(a));
  await d.s.whenPublished();
  return d;
}

const closeAll = (...ds: Dev[]) => Promise.all(ds.map((d) => d.c.close()));
const refusal = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);

describe("attachments over https:// follow the client's TLS options", () => {
  test("a client over TLS with { ca, serverName }: file and bytes up, to a file and into memory down, no option of their own", async () => {
    const alice = await secure(await srv.newDevice("mtlsa"), { tlsTransport: true });
    const bob = await secure(await srv.newDevice("mtlsb"), { tlsTransport: true });
    const path = join(work, "photo.bin");
    const plain = randomBytes(300_000);
    writeFileSync(path, plain);
    const { attachment } = await alice.s.sendFile("mtlsb", path, { type: "image/jpeg" });
    expect(attachment.url).toBe(`https://127.0.0.1:${port}/media/${attachment.id}`);
    const bytes = new Uint8Array(randomBytes(5_000));
    const second = (await alice.s.sendFile("mtlsb", bytes)).attachment; // media-web.ts: the in-memory way
    await waitFor(() => bob.got.length === 2, "bob's two attachment events");
    const dest = join(work, "photo-bob.bin");
    expect(await bob.s.download(bob.got[0]!.attachment, dest)).toMatchObject({ size: plain.length });
    expect(readFileSync(dest).equals(plain)).toBe(true);
    expect(Buffer.from(await bob.s.fetchAttachment(second)).equals(Buffer.from(bytes))).toBe(true);
    await closeAll(alice, bob);
  });

  test("a client over TLS with { rejectUnauthorized: false } accepts the certificate for its media too", async () => {
    const alice = await secure(await srv.newDevice("mtlsc"), { tlsTransport: true, tls: { rejectUnauthorized: false } });
    const bob = await secure(await srv.newDevice("mtlsd"), { tlsTransport: true });
    const path = join(work, "note.bin");
    const plain = randomBytes(20_000);
    writeFileSync(path, plain);
    await alice.s.sendFile("mtlsd", path);
    await waitFor(() => bob.got.length === 1, "bob's attachment event");
    expect(Buffer.from(await alice.s.fetchAttachment(bob.got[0]!.attachment)).equals(plain)).toBe(true);
    await closeAll(alice, bob);
  });

  test("a client over plain TCP: MediaError tls at once, nothing saved; the transfer's own tls: { ca } makes it go", async () => {
    const alice = await secure(await srv.newDevice("mtlse"), {});
    const bob = await secure(await srv.newDevice("mtlsf"), {});
    const path = join(work, "doc.bin");
    const plain = randomBytes(40_000);
    writeFileSync(path, plain);
    // stallMs large: a refusal that came from retrying until the stall limit would fail the test by its timeout.
    const up = await refusal(alice.s.sendFile("mtlsf", path, { stallMs: 600_000 }));
    expect(up).toBeInstanceOf(MediaError);
    expect((up as MediaError).code).toBe("tls");
    expect((up as MediaError).message).toContain("tls option { ca }");
    const { attachment } = await alice.s.sendFile("mtlsf", path, { tls: { ca: srv.ca() } });
    await waitFor(() => bob.got.length === 1, "bob's attachment event");
    const dest = join(work, "doc-bob.bin");
    const down = await refusal(bob.s.download(attachment, dest, { stallMs: 600_000 }));
    expect((down as MediaError).code).toBe("tls");
    expect(existsSync(dest)).toBe(false);
    expect((await refusal(bob.s.fetchAttachment(attachment, { stallMs: 600_000 })) as MediaError).code).toBe("tls");
    await bob.s.download(attachment, dest, { tls: { ca: srv.ca() } });
    expect(readFileSync(dest).equals(plain)).toBe(true);
    await closeAll(alice, bob);
  });
});

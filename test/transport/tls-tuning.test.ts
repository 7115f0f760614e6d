/**
 * tls.max_version and tls.groups reach the TLS port's handshakes (src/transport/devcert.ts tlsTuning): a client
 * offering TLS 1.3 and the post-quantum hybrid gets what the server allows, and a TLS 1.2 session resumes
 * (the abbreviated handshake, no key exchange: BENCHMARKS.md, reconnect storm). The SDK logs in over both.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { encodeFrame } from "../../src/protocol/codec.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";

type Seen = { version: string; group: string | null; resumed: boolean; session: unknown };

/**
 * One TLS connection to the server's TLS port: a hello, and what the client saw once the server's answer came (by
 * then a TLS 1.3 session ticket has been read too, as in the SDK, src/client/wire.ts); then closed.
 */
function handshake(srv: TestServer, session: unknown = null): Promise<Seen> {
  return new Promise((done, fail) => {
    let seen = false;
    Bun.connect({
      hostname: "127.0.0.1",
      port: srv.tls,
      tls: { ca: srv.ca(), serverName: "localhost" },
      socket: {
        open(s) {
          if (session !== null) (s as unknown as { setSession(x: unknown): void }).setSession(session);
        },
        handshake(s, ok, err) {
          if (!ok) return fail(err);
          s.write(encodeFrame({ t: "hello", v: [1] }));
        },
        data(s) {
          if (seen) return;
          seen = true;
          const t = s as unknown as { getTLSVersion(): string; getEphemeralKeyInfo(): { name?: string } | null; isSessionReused(): boolean; getSession(): unknown };
          done({ version: t.getTLSVersion(), group: t.getEphemeralKeyInfo()?.name ?? null, resumed: t.isSessionReused(), session: t.getSession() });
          s.end();
        },
        error(_s, e) {
          fail(e);
        },
        connectError(_s, e) {
          fail(e);
        },
      },
    }).catch(fail);
  });
}

describe("TLS port handshake settings", () => {
  let srv: TestServer | null = null;
  afterEach(async () => {
    await srv?.cleanup();
    srv = null;
  });

  test("defaults: TLS 1.3 with the post-quantum hybrid first (no classical group to report)", async () => {
    srv = await startServer();
    const a = await handshake(srv);
    expect(a.version).toBe("TLSv1.3");
    expect(a.group).toBeNull(); // X25519MLKEM768: Bun reports no ephemeral key info for it
  });

  test("tls.groups X25519: the key exchange is X25519, again when the session is resumed (TLS 1.3 resumes with a key exchange)", async () => {
    srv = await startServer({ args: ["--tls-groups", "X25519"] });
    const a = await handshake(srv);
    expect(a).toMatchObject({ version: "TLSv1.3", group: "X25519", resumed: false });
    const b = await handshake(srv, a.session);
    expect(b).toMatchObject({ version: "TLSv1.3", group: "X25519", resumed: true });
  });

  test("tls.max_version 1.2: TLS 1.2, and a resumed session has no key exchange; the SDK logs in over it", async () => {
    srv = await startServer({ args: ["--tls-max-version", "1.2"] });
    const a = await handshake(srv);
    expect(a).toMatchObject({ version: "TLSv1.2", group: "X25519", resumed: false });
    const b = await handshake(srv, a.session);
    expect(b).toMatchObject({ version: "TLSv1.2", resumed: true });
    expect(b.group).toBeNull(); // abbreviated handshake: no ephemeral key
    const kf = await srv.newDevice("tess");
    const c = await srv.client(kf, { transport: "tls" });
    expect(c.isReady).toBe(true);
    c.dropConnection();
    await waitFor(() => c.isReady && c.lastLogin?.kind === "resume", "the SDK's reconnect");
    expect(c.lastLogin).toEqual({ kind: "resume", tlsResumed: true });
    await c.close();
  });
});

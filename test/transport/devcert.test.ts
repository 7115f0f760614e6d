import { afterAll, describe, expect, test } from "bun:test";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateDevCert, loadOrCreateDevCert, type DevCert } from "../../src/transport/devcert.ts";

describe("generateDevCert", () => {
  test("parses as X.509 and matches its key, self-signed", () => {
    const before = Math.floor(Date.now() / 1000) * 1000;
    const { key, cert } = generateDevCert();
    const after = Date.now();

    expect(key).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    expect(cert).toStartWith("-----BEGIN CERTIFICATE-----\n");

    const x = new X509Certificate(cert);
    expect(x.checkPrivateKey(createPrivateKey(key))).toBe(true);
    expect(x.verify(x.publicKey)).toBe(true);
    expect(x.subject).toBe("CN=switchboard-dev");
    expect(x.issuer).toBe("CN=switchboard-dev");
    expect(x.ca).toBe(false);
    expect(x.publicKey.asymmetricKeyType).toBe("ec");
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(x.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]); // extendedKeyUsage: serverAuth
    expect(x.serialNumber).toMatch(/^[0-9A-F]{32}$/i);

    const san = x.subjectAltName ?? "";
    expect(san).toContain("DNS:localhost");
    expect(san).toContain("IP Address:127.0.0.1");
    expect(san).toMatch(/IP Address:(0:0:0:0:0:0:0:1|::1)\b/);

    // now-1h .. now+825d, whole seconds.
    const from = Date.parse(x.validFrom);
    const to = Date.parse(x.validTo);
    expect(from).toBeGreaterThanOrEqual(before - 3600_000 - 1000);
    expect(from).toBeLessThanOrEqual(after - 3600_000);
    expect(to - from).toBe(825 * 86400_000 + 3600_000);
  });

  test("honours commonName, altNames, ips and days; serials differ", () => {
    const a = generateDevCert({ commonName: "relay.dev", altNames: ["relay.test"], ips: ["10.1.2.3", "fe80::1"], days: 30 });
    const b = generateDevCert({ commonName: "relay.dev" });
    const x = new X509Certificate(a.cert);
    expect(x.subject).toBe("CN=relay.dev");
    const san = x.subjectAltName ?? "";
    for (const s of ["DNS:localhost", "DNS:relay.test", "IP Address:127.0.0.1", "IP Address:10.1.2.3"]) expect(san).toContain(s);
    expect(san.toLowerCase()).toMatch(/ip address:(fe80:0:0:0:0:0:0:1|fe80::1)\b/);
    expect(x.checkHost("relay.test")).toBe("relay.test");
    expect(x.checkIP("10.1.2.3")).toBe("10.1.2.3");
    expect(Date.parse(x.validTo) - Date.parse(x.validFrom)).toBe(30 * 86400_000 + 3600_000);
    expect(x.serialNumber).not.toBe(new X509Certificate(b.cert).serialNumber);
    expect(x.verify(new X509Certificate(b.cert).publicKey)).toBe(false);
  });

  test("rejects bad input", () => {
    expect(() => generateDevCert({ ips: ["not-an-ip"] })).toThrow();
    expect(() => generateDevCert({ days: 0 })).toThrow();
  });
});

type Outcome = { handshakeOk: boolean; authError: string | null; received: string };

/** Connect with verification on (default), send `msg` after the handshake, collect what comes back until close. */
function tlsRoundTrip(port: number, ca: string, msg: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const out: Outcome = { handshakeOk: false, authError: null, received: "" };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      tls: { ca, serverName: "localhost" },
      socket: {
        handshake(socket, success, authorizationError) {
          out.handshakeOk = success;
          out.authError = authorizationError ? String(authorizationError.message ?? authorizationError) : null;
          if (success && !authorizationError) socket.write(msg);
        },
        data(socket, data) {
          out.received += data.toString();
          if (out.received.length >= msg.length) socket.end();
        },
        close() {
          resolve(out);
        },
        error() {
          /* outcome is judged from handshake/close */
        },
        connectError(_socket, err) {
          reject(err);
        },
      },
    }).catch(reject);
  });
}

describe("real TLS with Bun.listen / Bun.connect", () => {
  const good: DevCert = generateDevCert();
  const other: DevCert = generateDevCert();
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: { key: good.key, cert: good.cert },
    socket: {
      data(socket, data) {
        socket.write(data);
      },
      error() {},
    },
  });
  afterAll(() => server.stop(true));

  test("client trusting the dev cert completes the handshake and echoes bytes", async () => {
    const r = await tlsRoundTrip(server.port, good.cert, "hello over tls");
    expect(r.authError).toBeNull();
    expect(r.handshakeOk).toBe(true);
    expect(r.received).toBe("hello over tls");
  });

  test("client trusting a different cert is refused", async () => {
    const r = await tlsRoundTrip(server.port, other.cert, "should not arrive");
    expect(r.handshakeOk && r.authError === null).toBe(false);
    expect(r.received).toBe("");
  });
});

describe("loadOrCreateDevCert", () => {
  let dir = "";
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("creates once, then reuses the same files", async () => {
    dir = await mkdtemp(join(tmpdir(), "switchboard-devcert-"));
    const certDir = join(dir, "nested", "certs");

    const first = await loadOrCreateDevCert(certDir);
    expect(first.created).toBe(true);
    expect(first.keyPath).toBe(join(certDir, "dev-key.pem"));
    expect(first.certPath).toBe(join(certDir, "dev-cert.pem"));
    expect(await readFile(first.keyPath, "utf8")).toBe(first.key);
    expect(await readFile(first.certPath, "utf8")).toBe(first.cert);
    expect((await stat(first.keyPath)).mode & 0o777).toBe(0o600);
    expect(new X509Certificate(first.cert).checkPrivateKey(createPrivateKey(first.key))).toBe(true);

    const second = await loadOrCreateDevCert(certDir);
    expect(second.created).toBe(false);
    expect(second.key).toBe(first.key);
    expect(second.cert).toBe(first.cert);
    expect(second.keyPath).toBe(first.keyPath);
    expect(second.certPath).toBe(first.certPath);
  });
});

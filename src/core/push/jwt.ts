/**
 * Compact JWS for the three push protocols that need one: APNs provider tokens
 * and VAPID (ES256), and the FCM service-account assertion (RS256). node:crypto
 * only; ES256 signatures are the raw r||s form JOSE requires (RFC 7518 §3.4),
 * not DER, hence `dsaEncoding: "ieee-p1363"`.
 */
import { createPrivateKey, sign, verify, type KeyObject } from "node:crypto";

export function b64url(data: Uint8Array | string): string {
  return Buffer.from(typeof data === "string" ? Buffer.from(data, "utf8") : data).toString("base64url");
}

export function fromB64url(s: string): Buffer {
  return Buffer.from(s, "base64url");
}

export type JwtAlg = "ES256" | "RS256";

export function signJwt(alg: JwtAlg, header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject): string {
  const input = `${b64url(JSON.stringify({ alg, ...header }))}.${b64url(JSON.stringify(claims))}`;
  const sig = alg === "ES256" ? sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }) : sign("sha256", Buffer.from(input), key);
  return `${input}.${b64url(sig)}`;
}

/**
 * Verifies a compact JWS and returns its header and claims, or null. Used by
 * the test servers (and by anyone writing a gateway), so it lives next to the
 * signer instead of being written twice.
 */
export function verifyJwt(alg: JwtAlg, jwt: string, key: KeyObject): { header: Record<string, unknown>; claims: Record<string, unknown> } | null {
  const parts = jwt.split(".");
  if (parts.length !== 3) return null;
  const [h, c, s] = parts as [string, string, string];
  let header: Record<string, unknown>;
  let claims: Record<string, unknown>;
  try {
    header = JSON.parse(fromB64url(h).toString("utf8"));
    claims = JSON.parse(fromB64url(c).toString("utf8"));
  } catch {
    return null;
  }
  if (header.alg !== alg) return null;
  const data = Buffer.from(`${h}.${c}`);
  const sig = fromB64url(s);
  const ok = alg === "ES256" ? verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, sig) : verify("sha256", data, key, sig);
  return ok ? { header, claims } : null;
}

/** A private key from PEM (PKCS#8, as in an APNs .p8 file or a service-account JSON), with the fix in the error. */
export function privateKeyFromPem(pem: string, what: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (e) {
    throw new Error(`${what}: not a PEM private key (${(e as Error).message}); pass the file's contents, not its path`);
  }
}

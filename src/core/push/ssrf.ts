/**
 * A Web Push endpoint is a URL the *client* chose, and the server will POST to
 * it: without checks, any account could make the server probe its own network
 * (SSRF). UnifiedPush's server spec asks for what is done here: https only, no
 * private or local addresses, no redirects (`post` never follows them).
 *
 * Known gap: the name is resolved here and again by fetch, so a DNS answer that
 * changes in between (rebinding) is not caught; closing it needs fetch to take
 * a resolved address, which Bun's fetch does not offer.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { errorText } from "./http.ts";
import type { PushOutcome } from "./types.ts";

export type EndpointCheck = { ok: true } | { ok: false; outcome: PushOutcome };

export async function checkEndpoint(endpoint: string, allowInsecure: boolean): Promise<EndpointCheck> {
  let u: URL;
  try {
    u = new URL(endpoint);
  } catch {
    return refuse("endpoint is not a URL");
  }
  if (u.protocol !== "https:" && !(allowInsecure && u.protocol === "http:")) return refuse(`endpoint scheme ${u.protocol} refused`);
  if (u.username || u.password) return refuse("endpoint with credentials refused");
  if (allowInsecure) return { ok: true };
  const host = u.hostname.replace(/^\[|\]$/g, "");
  if (host === "localhost" || host.endsWith(".localhost")) return refuse("endpoint on localhost refused");
  let addrs: string[];
  if (isIP(host)) addrs = [host];
  else {
    try {
      addrs = (await lookup(host, { all: true })).map((a) => a.address);
    } catch (e) {
      // A name that does not resolve now may resolve later: not the subscription's fault yet.
      return { ok: false, outcome: { kind: "retry", reason: `dns: ${errorText(e)}`, afterMs: null } };
    }
  }
  const bad = addrs.find(isPrivateAddress);
  return bad === undefined ? { ok: true } : refuse(`endpoint resolves to a private address (${bad})`);
}

/** An endpoint the server must never call is a dead subscription: the caller removes it like any invalid token. */
function refuse(reason: string): EndpointCheck {
  return { ok: false, outcome: { kind: "invalid-token", reason, status: 0 } };
}

/** Loopback, private, link-local, CGNAT, unspecified, multicast and reserved ranges (IPv4, IPv6, v4-mapped). */
export function isPrivateAddress(ip: string): boolean {
  if (isIP(ip) === 4) {
    const [a, b] = ip.split(".").map(Number) as [number, number];
    return (
      a === 0 || a === 10 || a === 127 || a >= 224 ||
      (a === 100 && b >= 64 && b < 128) ||
      (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b < 32) ||
      (a === 192 && b === 168) ||
      (a === 192 && b === 0) ||
      (a === 198 && (b === 18 || b === 19))
    );
  }
  const v6 = ip.toLowerCase().replace(/%.*$/, "");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v6);
  if (mapped) return isPrivateAddress(mapped[1]!);
  if (v6 === "::" || v6 === "::1") return true;
  const first = parseInt(v6.split(":")[0] || "0", 16);
  return (first & 0xfe00) === 0xfc00 || (first & 0xffc0) === 0xfe80 || (first & 0xff00) === 0xff00;
}

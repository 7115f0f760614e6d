/**
 * The unauthenticated part of a connection: version negotiation, then one of
 * auth (a known device), enroll (the first device, with a one-time code) or
 * link (a further device, approved from an existing one). Every proof is an
 * Ed25519 signature over proofTranscript(purpose, server id, this
 * connection's fresh nonce, account, device): a replayed or forwarded proof
 * signs the wrong nonce or the wrong server and fails.
 */
import { randomBytes, verify, type KeyObject } from "node:crypto";
import { proofTranscript, type ProofPurpose } from "../protocol/auth.ts";
import { CloseReason, ErrorCode } from "../protocol/errors.ts";
import { PROTOCOL_VERSION, SUPPORTED_VERSIONS, type Auth, type Enroll, type HelloC, type Link, type Resume } from "../protocol/stanzas.ts";
import { ConnState, type Conn } from "../transport/connection.ts";
import type { ServerContext } from "./context.ts";
import { ed25519PublicKey, ed25519Spki, type Ed25519Spki } from "./directory.ts";
import { FailureLimiter, type Admission, type AdmissionReason } from "./ratelimit.ts";
import type { Counter } from "./metrics.ts";
import { Tickets, type IssuedTicket } from "./tickets.ts";

const LINK_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/**
 * Account names the server keeps for itself (the readiness canary,
 * src/ops/canary.ts): `switchboard user add` and `user code` refuse them,
 * and their logins and sessions are left out of the user-facing metrics.
 */
export const INTERNAL_ACCOUNT_PREFIX = "switchboard.";
export const isInternalAccount = (account: string): boolean => account.startsWith(INTERNAL_ACCOUNT_PREFIX);

export class Sessions {
  private perIp: FailureLimiter;
  private perAccount: FailureLimiter;
  /** Link requests waiting for approval, by code. */
  private links = new Map<string, Conn>();
  private logins: Record<string, Counter>;
  private refused: Record<AdmissionReason, Counter>;
  readonly tickets: Tickets;

  constructor(
    private ctx: ServerContext,
    private onReady: (conn: Conn) => void,
    /** Admission control for new logins (src/core/ratelimit.ts); null admits everyone. */
    private admission: Admission | null = null,
  ) {
    this.perIp = new FailureLimiter(ctx.config.auth.failPerIp);
    this.perAccount = new FailureLimiter(ctx.config.auth.failPerAccount);
    this.tickets = new Tickets(ctx.accounts, ctx.directory, ctx.accounts.serverId(), ctx.config.auth.ticketLifetime * 1000);
    const m = ctx.metrics;
    const c = (result: string) => m.counter("switchboard_logins_total", "Login attempts by result.", { result });
    this.logins = {
      ok: c("ok"), resumed: c("resumed"), ticket_refused: c("ticket_refused"), enrolled: c("enrolled"), linked: c("linked"), bad_proof: c("bad_proof"), unknown_device: c("unknown_device"),
      bad_code: c("bad_code"), rate_limited: c("rate_limited"), refused: c("refused"), try_again: c("try_again"),
    };
    const r = (reason: AdmissionReason) => m.counter("switchboard_admission_refused_total", "Connections, logins and sends turned away by admission control, by reason.", { reason });
    this.refused = { connections: r("connections"), login_rate: r("login_rate"), lag: r("lag"), memory: r("memory") };
  }

  /**
   * Admission control, before any work on a login (no signature check, no
   * store read): when the server is over a threshold the client gets
   * `err try_again` with `x.retry_ms` and `close try_again` with `ra`, the
   * same jittered delay. Returns true when it refused.
   */
  private busy(conn: Conn, now: number): boolean {
    const r = this.admission?.login(now);
    if (!r) return false;
    this.logins.try_again!.inc();
    this.refused[r.reason].inc();
    this.ctx.sendError(conn, ErrorCode.TRY_AGAIN, `the server is busy (${r.reason}); try again in ${r.retryMs} ms`, undefined, { retry_ms: r.retryMs });
    conn.close(CloseReason.TRY_AGAIN, "the server is busy", r.retryMs);
    return true;
  }

  hello(conn: Conn, s: HelloC): void {
    const v = s.v.includes(PROTOCOL_VERSION) ? PROTOCOL_VERSION : SUPPORTED_VERSIONS.find((x) => s.v.includes(x));
    if (v === undefined) {
      this.ctx.sendError(conn, ErrorCode.UNSUPPORTED_VERSION, `this server speaks protocol versions ${SUPPORTED_VERSIONS.join(", ")}`);
      conn.close(CloseReason.UNSUPPORTED_VERSION);
      return;
    }
    // getRandomValues, not node:crypto's randomBytes: the same CSPRNG, about 0.1 against 0.6 µs, once per connection.
    conn.nonce = crypto.getRandomValues(new Uint8Array(32));
    conn.state = ConnState.AUTH;
    conn.tickets = s.tk === true && this.tickets.enabled;
    conn.sentRides = s.sr === true && this.ctx.config.queue.sentRides; // queue.sent_rides = false turns it off (on by default)
    const t = this.ctx.config.timeouts;
    const hello: Record<string, unknown> = { t: "hello", v, sid: this.ctx.accounts.serverId(), nonce: conn.nonce, mf: this.ctx.config.limits.maxFrame, pi: t.pingInterval, it: t.idle };
    // Said before the first upload so that a client declares media.upload {n} only where the server uses it (§6.12).
    if (this.ctx.config.media.deleteAfterDownload && this.ctx.config.http.port >= 0) hello.dd = true;
    if (s.sc === true) {
      // The client confirms its `sent` frames (§6.2): they are logged for its cumulative `ack {sc}`.
      conn.confirms = true;
      hello.sc = true; // last, as before: not a copy of the object per hello
    }
    conn.send(hello);
  }

  /**
   * Failures are counted per source address and per (account, source address), never per
   * account alone: ten bad proofs for a name (no key needed) locked its real devices out
   * for a minute, repeatable forever. Every proof and code is unguessable (Ed25519, a
   * 100-bit enrollment code), so a per-account count protected nothing anyway; what the
   * limits bound is the work one source makes the server do.
   */
  private static accountKey(account: string, conn: Conn): string {
    return `${account}\u0000${conn.remote}`;
  }

  /** Returns true when the attempt may go on; otherwise it has refused and closed. */
  private admit(conn: Conn, account: string, now: number): boolean {
    // Without recent failures nobody is blocked: the peer's address is not read. Reading it makes Bun keep
    // the address string on the socket for the connection's life (a heap snapshot at 3 000 idle connections
    // showed one per TCPSocket), and the (account, address) key is garbage made per login.
    if (this.perIp.empty && this.perAccount.empty) return true;
    const wait = Math.max(this.perIp.blockedFor(conn.remote, now), this.perAccount.blockedFor(Sessions.accountKey(account, conn), now));
    if (wait === 0) return true;
    this.logins.rate_limited!.inc();
    this.ctx.sendError(conn, ErrorCode.RATE_LIMITED, "too many failed logins; try again later", undefined, { retry_ms: wait });
    conn.close(CloseReason.RATE_LIMITED, undefined, wait);
    return false;
  }

  private refuse(conn: Conn, account: string, now: number, code: ErrorCode, message: string, counter: string): void {
    this.perIp.fail(conn.remote, now);
    this.perAccount.fail(Sessions.accountKey(account, conn), now);
    this.logins[counter]!.inc();
    this.ctx.sendError(conn, code, message);
    conn.close(CloseReason.AUTH_FAILED);
  }

  /**
   * An account the operator disabled (`switchboard user disable`) is refused after its proof
   * verified, so only its own devices learn that it is disabled (no probing, as for auth_failed).
   * `known`: the flag when the login already read it with the device's key (auth, resume: one read, not two).
   */
  private disabled(conn: Conn, account: string, known?: boolean): boolean {
    if (!(known ?? this.ctx.accounts.isDisabled(account))) return false;
    this.logins.refused!.inc();
    this.ctx.sendError(conn, ErrorCode.ACCOUNT_DISABLED, `account ${account} is disabled by the server's operator`);
    conn.close(CloseReason.ACCOUNT_DISABLED);
    return true;
  }

  private proofOk(conn: Conn, purpose: ProofPurpose, key: KeyObject | Ed25519Spki, account: string, device: number, sig: Uint8Array): boolean {
    const msg = proofTranscript(purpose, this.ctx.accounts.serverId(), conn.nonce!, account, device);
    try {
      return verify(null, msg, key, sig);
    } catch {
      return false;
    }
  }

  /** The key a new device presents (enroll, link); null after refusing when it is not an Ed25519 key. */
  private newDeviceKey(conn: Conn, account: string, pk: Uint8Array, now: number): KeyObject | null {
    try {
      return ed25519PublicKey(pk);
    } catch {
      this.refuse(conn, account, now, ErrorCode.AUTH_FAILED, "pk is not an Ed25519 public key", "bad_proof");
      return null;
    }
  }

  auth(conn: Conn, s: Auth): void {
    const now = Date.now();
    if (this.busy(conn, now) || !this.admit(conn, s.u, now)) return;
    const { pk, disabled } = this.ctx.directory.loginKey(s.u, s.d);
    // Same answer for unknown account, unknown or revoked device and a bad signature: no account probing.
    if (pk === null || pk.length !== 32) return this.refuse(conn, s.u, now, ErrorCode.AUTH_FAILED, "authentication failed", "unknown_device");
    // The DER input, not a KeyObject (ed25519Spki: what a KeyObject per login cost in RSS). A stored key that
    // does not parse fails in verify() and is refused alike.
    if (!this.proofOk(conn, "auth", ed25519Spki(pk), s.u, s.d, s.sig)) {
      return this.refuse(conn, s.u, now, ErrorCode.AUTH_FAILED, "authentication failed", "bad_proof");
    }
    if (this.disabled(conn, s.u, disabled)) return;
    if (!isInternalAccount(s.u)) this.logins.ok!.inc();
    if (s.rx === false) conn.rx = false;
    this.ready(conn, s.u, s.d);
  }

  /**
   * A login with a resumption ticket (§4.11), usually in the same write as the hello. A refused ticket is not
   * fatal: `err ticket_refused`, and the connection waits for an `auth` signed over this hello's nonce. A
   * forged proof (or an unknown device: the same answer) counts towards the failure limits as a bad signature does.
   */
  resume(conn: Conn, s: Resume): void {
    const now = Date.now();
    if (this.busy(conn, now) || !this.admit(conn, s.u, now)) return;
    // No accounts.db read: the ticket's MAC proves the device, and what changed since it was issued is in memory
    // (Tickets.check, Directory.loginChangedAt and disabledLogin).
    const no = this.tickets.check(s.u, s.d, s.tk, s.ts, s.mac, now);
    if ("reason" in no) {
      if (no.counts) {
        this.perIp.fail(conn.remote, now);
        this.perAccount.fail(Sessions.accountKey(s.u, conn), now);
      }
      this.logins.ticket_refused!.inc();
      this.ctx.sendError(conn, ErrorCode.TICKET_REFUSED, `ticket refused: ${no.reason}; log in with auth`);
      return;
    }
    if (this.disabled(conn, s.u, this.ctx.directory.disabledLogin(s.u))) return;
    if (!isInternalAccount(s.u)) this.logins.resumed!.inc();
    if (s.rx === false) conn.rx = false;
    this.ready(conn, s.u, s.d, no.again);
  }

  enroll(conn: Conn, s: Enroll): void {
    const now = Date.now();
    if (this.busy(conn, now) || !this.admit(conn, s.u, now)) return;
    const key = this.newDeviceKey(conn, s.u, s.pk, now);
    if (key === null) return;
    if (!this.proofOk(conn, "enroll", key, s.u, 0, s.sig)) {
      return this.refuse(conn, s.u, now, ErrorCode.AUTH_FAILED, "the enrollment proof does not verify with pk", "bad_proof");
    }
    if (this.disabled(conn, s.u)) return;
    const r = this.ctx.directory.enroll(s.u, s.code, s.pk, s.name ?? "device");
    if (!r.ok) {
      if (r.reason === ErrorCode.BAD_CODE) return this.refuse(conn, s.u, now, r.reason, r.message, "bad_code");
      this.logins.refused!.inc();
      this.ctx.sendError(conn, r.reason, r.message);
      conn.close(CloseReason.AUTH_FAILED);
      return;
    }
    this.logins.enrolled!.inc();
    this.ctx.hooks.run("device:added", s.u, r.value.device);
    this.ready(conn, s.u, r.value.device);
  }

  link(conn: Conn, s: Link): void {
    const now = Date.now();
    if (this.busy(conn, now) || !this.admit(conn, s.u, now)) return;
    const key = this.newDeviceKey(conn, s.u, s.pk, now);
    if (key === null) return;
    if (!this.proofOk(conn, "link", key, s.u, 0, s.sig)) {
      return this.refuse(conn, s.u, now, ErrorCode.AUTH_FAILED, "authentication failed", "bad_proof");
    }
    // An unknown account gets a link code too, which no device can approve (approve() matches the
    // approver's account): `linkcode` for one and `auth_failed` for the other let anyone probe
    // account names before login (§4.5). The request lapses as any unapproved one does.
    const bytes = randomBytes(8);
    let code = "";
    for (const b of bytes) code += LINK_ALPHABET[b % LINK_ALPHABET.length];
    const expires = now + this.ctx.config.timeouts.link * 1000;
    conn.link = { code, pk: new Uint8Array(s.pk), name: s.name ?? "device", expires };
    conn.account = s.u; // not registered until approved
    conn.state = ConnState.LINKING;
    this.links.set(code, conn);
    conn.send({ t: "linkcode", code, exp: expires });
  }

  /** An existing device approves a link code. */
  approve(approver: Conn, code: string): { ok: true; device: number } | { ok: false; e: ErrorCode; m: string } {
    const norm = code.toUpperCase().replace(/[^A-Z0-9]/g, "");
    const waiting = this.links.get(norm);
    if (!waiting || waiting.state !== ConnState.LINKING || waiting.account !== approver.account) {
      return { ok: false, e: ErrorCode.NOT_FOUND, m: "no pending link request with that code for this account" };
    }
    this.links.delete(norm);
    const r = this.ctx.directory.addDevice(waiting.account, waiting.link!.pk, waiting.link!.name);
    if (!r.ok) {
      this.ctx.sendError(waiting, r.reason, r.message);
      waiting.close(CloseReason.AUTH_FAILED);
      return { ok: false, e: r.reason, m: r.message };
    }
    this.logins.linked!.inc();
    this.ctx.hooks.run("device:added", waiting.account, r.value.device);
    this.ready(waiting, waiting.account, r.value.device);
    return { ok: true, device: r.value.device };
  }

  /** `again`: a ticket to hand back instead of a fresh one (Tickets.check). */
  private ready(conn: Conn, account: string, device: number, again: IssuedTicket | null = null): void {
    conn.account = account;
    conn.device = device;
    conn.core = null; // its acceptance map and peer facts were taken for no device yet (src/core/facts.ts)
    conn.state = ConnState.READY;
    conn.loggedIn(); // drops the nonce and the link request
    // A receiving session replaces the device's previous receiving one; a non-receiving one replaces only
    // the oldest of its kind past the cap (src/core/registry.ts), so a CLI one-shot never evicts a chat.
    const old = this.ctx.registry.add(conn);
    if (old !== undefined && old !== conn) {
      old.close(CloseReason.REPLACED, conn.rx ? "this device logged in on another connection" : "too many non-receiving sessions for this device");
    }
    const now = Date.now();
    if (conn.tickets) {
      // The ticket's fields named, not spread in: a spread copies through the object's properties per login.
      const t = again ?? this.tickets.issue(account, device, now);
      conn.send({ t: "ready", u: account, d: device, ts: now, tk: t.tk, tks: t.tks, tke: t.tke });
    } else conn.send({ t: "ready", u: account, d: device, ts: now });
    this.onReady(conn);
  }

  closed(conn: Conn): void {
    if (conn.link) this.links.delete(conn.link.code);
  }

  /** Expires link requests and rate-limit windows; called from the sweep. */
  sweep(now: number): void {
    for (const [code, conn] of this.links) {
      if (conn.link && conn.link.expires <= now) {
        this.links.delete(code);
        this.ctx.sendError(conn, ErrorCode.LINK_EXPIRED, "the link request was not approved in time");
        conn.close(CloseReason.AUTH_TIMEOUT);
      }
    }
    this.perIp.sweep(now);
    this.perAccount.sweep(now);
    this.tickets.sweep(now);
  }
}

/**
 * `switchboard relay`: the subset of TURN (RFC 8656) WebRTC uses, over UDP:
 * Allocate (with EVEN-PORT and its reservation), Refresh, CreatePermission,
 * ChannelBind, Send and Data indications, ChannelData; Binding for STUN.
 * Credentials are TURN REST (src/protocol/turn-rest.ts), the ones the chat
 * server issues; an allocation is tied to the device they name, so a
 * revocation (signed control message, http.ts) ends its flows at once.
 *
 * Every UDP socket has an `error` handler: without one an ICMP port
 * unreachable (a peer that went away: ECONNREFUSED on the next send) crashes
 * the process (found in the lost branch).
 */
import { randomBytes } from "node:crypto";
import {
  Attr, Class, Method, StunError, attr, attrString, attrU32, checkFingerprint, checkIntegrity, decode, decodeChannelData,
  encode, encodeChannelData, errorCode, isChannelData, readChannelNumber, readXorAddress, text, u32, xorAddress,
  type StunAttr, type StunMessage,
} from "../../protocol/stun.ts";
import { Allocation, isLoopback, normalIp, type PeerSink, type RelaySocket } from "./allocation.ts";
import { authenticate, Nonces } from "./auth.ts";

export interface RelayOptions {
  host: string;
  port: number;
  /** Address written in XOR-RELAYED-ADDRESS (and bound for relayed sockets). Empty: host. */
  publicIp: string;
  realm: string;
  secrets: readonly string[];
  minPort: number;
  maxPort: number;
  defaultLifetime: number;
  maxLifetime: number;
  /** Per allocation, each way summed; 0: no cap. */
  pps: number;
  bps: number;
  perDevice: number;
  maxAllocations: number;
  /** Packets a second, and event-loop lag (ms), counted as 100 % load (/load). */
  capacityPps: number;
  capacityLagMs: number;
  allowLoopback: boolean;
}

export interface RelayCounters {
  allocations: number;
  allocateOk: number;
  refused: Map<number, number>;
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  dropped: number;
  revoked: number;
}

const SOFTWARE = { type: Attr.Software, value: text("switchboard relay") };
const RESERVATION_MS = 30_000;

export class TurnRelay {
  private sock: RelaySocket | null = null;
  private readonly byClient = new Map<string, Allocation>();
  private readonly byDevice = new Map<string, Set<Allocation>>();
  private readonly reservations = new Map<string, { socket: RelaySocket; sink: PeerSink; port: number; expires: number }>();
  /** Device -> until (ms): refused new allocations, whatever its credentials say. */
  private readonly revoked = new Map<string, number>();
  private readonly nonces = new Nonces();
  private sweepTimer: ReturnType<typeof setInterval> | null = null;
  private nextId = 1;
  readonly counters: RelayCounters = {
    allocations: 0, allocateOk: 0, refused: new Map(), packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, dropped: 0, revoked: 0,
  };
  /** Packets relayed in the last whole second (both ways): the load the server sheds by. */
  ppsLastSecond = 0;
  private ppsCount = 0;
  /** Load in percent (pps over capacity_pps, event-loop lag over capacity_lag_ms, allocations over the maximum), each second. */
  load = 0;
  /** At 100 % load new allocations get 508 Insufficient Capacity; existing ones are never cut. */
  get shed(): boolean {
    return this.load >= 100;
  }

  /** `lag`: the process's event-loop lag (core's EventLoopMonitor, handed in by the CLI). */
  constructor(readonly opts: RelayOptions, private readonly lag: { recentMs: number } = { recentMs: 0 }) {
    if (!opts.secrets.length) throw new Error("relay: no secret; set calls.secret (the same as the chat server's)");
  }

  get port(): number {
    return this.sock?.port ?? 0;
  }

  get allocationCount(): number {
    return this.byClient.size;
  }

  async start(): Promise<void> {
    this.sock = await Bun.udpSocket({
      hostname: this.opts.host,
      port: this.opts.port,
      binaryType: "uint8array",
      socket: {
        data: (_s, data, port, address) => this.fromClient(data, port, address),
        error: () => {}, // ICMP unreachable from a client that left; nothing to do
      },
    });
    this.sweepTimer = setInterval(() => this.sweep(Date.now()), 1000);
  }

  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const a of this.byClient.values()) a.close();
    for (const r of this.reservations.values()) r.socket.close();
    this.byClient.clear();
    this.byDevice.clear();
    this.reservations.clear();
    this.sock?.close();
  }

  /** Ends every allocation of `device` now and refuses new ones for `forMs`. Returns how many ended. */
  revoke(device: string, forMs: number): number {
    this.revoked.set(device, Date.now() + forMs);
    const set = this.byDevice.get(device);
    let n = 0;
    for (const a of set ?? []) {
      this.remove(a);
      n++;
    }
    this.counters.revoked += n;
    return n;
  }

  allocationsOf(device: string): number {
    return this.byDevice.get(device)?.size ?? 0;
  }

  // ---- client side ---------------------------------------------------------

  private fromClient(data: Uint8Array, port: number, address: string): void {
    const client = `${normalIp(address)}|${port}`;
    const now = Date.now();
    if (isChannelData(data)) {
      const a = this.byClient.get(client);
      const cd = decodeChannelData(data);
      if (!a || !cd) return;
      const ch = a.channels.get(cd.channel);
      if (!ch || ch.expires <= now) return;
      this.toPeer(a, cd.data, ch.address, ch.port, now);
      return;
    }
    const m = decode(data);
    if (!m || !checkFingerprint(m)) return;
    if (m.cls === Class.Indication) {
      if (m.method === Method.Send) this.onSend(client, m, now);
      return;
    }
    if (m.cls !== Class.Request) return;
    const reply = (out: Uint8Array) => void this.sock!.send(out, port, address);
    switch (m.method) {
      case Method.Binding:
        reply(encode({ method: m.method, cls: Class.Success, tid: m.tid, attrs: [{ type: Attr.XorMappedAddress, value: xorAddress({ family: address.includes(":") && !address.includes(".") ? 6 : 4, address: normalIp(address), port }, m.tid) }, SOFTWARE] }, { fingerprint: true }));
        return;
      case Method.Allocate:
        void this.onAllocate(client, address, port, m, now).then(reply, () => reply(this.error(m, StunError.ServerError, "Server Error")));
        return;
      case Method.Refresh:
      case Method.CreatePermission:
      case Method.ChannelBind: {
        const a = this.byClient.get(client);
        if (!a) return reply(this.error(m, StunError.AllocationMismatch, "Allocation Mismatch"));
        const auth = this.checkAuth(m, now, a);
        if (auth) return reply(auth);
        reply(this.onAllocationRequest(a, m, now));
        return;
      }
      default:
        reply(this.error(m, StunError.BadRequest, "Bad Request"));
    }
  }

  /** An error answer for a request that failed authentication or needs the challenge: null when `m` is authentic for `a`. */
  private checkAuth(m: StunMessage, now: number, a?: Allocation): Uint8Array | null {
    const username = attrString(m, Attr.Username);
    const nonce = attrString(m, Attr.Nonce);
    if (!username || !nonce || attr(m, Attr.MessageIntegrity) === undefined) return this.challenge(m, StunError.Unauthorized, "Unauthorized", now);
    const n = this.nonces.check(nonce, now);
    if (n === "bad") return this.challenge(m, StunError.Unauthorized, "Unauthorized", now);
    if (a) {
      if (username !== a.username) return this.error(m, StunError.WrongCredentials, "Wrong Credentials");
      if (!checkIntegrity(m, a.key)) return this.challenge(m, StunError.Unauthorized, "Unauthorized", now);
    }
    if (n === "stale") return this.challenge(m, StunError.StaleNonce, "Stale Nonce", now);
    return null;
  }

  private async onAllocate(client: string, address: string, port: number, m: StunMessage, now: number): Promise<Uint8Array> {
    const existing = this.byClient.get(client);
    const tid = Buffer.from(m.tid).toString("hex");
    if (existing && existing.lastTid === tid && existing.lastResponse) return existing.lastResponse;
    const pre = this.checkAuth(m, now);
    if (pre) return pre;
    const auth = authenticate(m, attrString(m, Attr.Username)!, this.opts.realm, this.opts.secrets, Math.floor(now / 1000));
    if (!auth.ok) return this.challenge(m, StunError.Unauthorized, "Unauthorized", now);
    const ok = (cls: number, attrs: StunAttr[]) => encode({ method: m.method, cls: cls as 0, tid: m.tid, attrs: [...attrs, SOFTWARE] }, { key: auth.key, fingerprint: true });
    const fail = (code: number, reason: string) => {
      this.count(code);
      return ok(Class.Error, [{ type: Attr.ErrorCode, value: errorCode(code, reason) }]);
    };
    if (existing) return fail(StunError.AllocationMismatch, "Allocation Mismatch");
    const transport = attr(m, Attr.RequestedTransport);
    if (!transport) return fail(StunError.BadRequest, "Bad Request: no REQUESTED-TRANSPORT");
    if (transport[0] !== 17) return fail(StunError.UnsupportedTransport, "Unsupported Transport Protocol");
    const family = attr(m, Attr.RequestedAddressFamily);
    if (family && family[0] !== 1) return fail(440, "Address Family not Supported");
    const until = this.revoked.get(auth.device);
    if (until !== undefined && until > now) return fail(StunError.Forbidden, "Forbidden: device revoked");
    if (this.allocationsOf(auth.device) >= this.opts.perDevice) return fail(StunError.AllocationQuotaReached, "Allocation Quota Reached");
    if (this.shed || (this.opts.maxAllocations > 0 && this.byClient.size >= this.opts.maxAllocations)) return fail(StunError.InsufficientCapacity, "Insufficient Capacity");
    const token = attr(m, Attr.ReservationToken);
    const even = attr(m, Attr.EvenPort);
    if (token && even) return fail(StunError.BadRequest, "Bad Request: EVEN-PORT with RESERVATION-TOKEN");
    let bound: { socket: RelaySocket; sink: PeerSink; port: number } | null;
    let newToken: Uint8Array | null = null;
    if (token) {
      const key = Buffer.from(token).toString("hex");
      bound = this.reservations.get(key) ?? null;
      this.reservations.delete(key);
      if (!bound) return fail(StunError.InsufficientCapacity, "Insufficient Capacity: no such reservation");
    } else {
      const reserve = even !== undefined && (even[0]! & 0x80) !== 0;
      const pair = await this.bindRelayed(even !== undefined, reserve);
      if (!pair) return fail(StunError.InsufficientCapacity, "Insufficient Capacity: no relay port");
      bound = pair[0];
      if (pair[1]) {
        newToken = randomBytes(8);
        this.reservations.set(Buffer.from(newToken).toString("hex"), { ...pair[1], expires: now + RESERVATION_MS });
      }
    }
    const lifetime = this.lifetime(attrU32(m, Attr.Lifetime), auth.expires, now);
    const relayedAddress = this.opts.publicIp || this.opts.host;
    const a = new Allocation(
      this.nextId++, client, address, port, auth.device, auth.username, auth.key, bound.socket, relayedAddress,
      auth.expires, now + lifetime * 1000, { pps: this.opts.pps, bps: this.opts.bps }, now,
    );
    bound.sink.target = (data, p, addr) => this.fromPeer(a, data, p, addr);
    this.byClient.set(client, a);
    let set = this.byDevice.get(auth.device);
    if (!set) this.byDevice.set(auth.device, (set = new Set()));
    set.add(a);
    this.counters.allocateOk++;
    const attrs: StunAttr[] = [
      { type: Attr.XorRelayedAddress, value: xorAddress({ family: 4, address: relayedAddress, port: bound.port }, m.tid) },
      { type: Attr.Lifetime, value: u32(lifetime) },
      { type: Attr.XorMappedAddress, value: xorAddress({ family: 4, address: normalIp(address), port }, m.tid) },
    ];
    if (newToken) attrs.push({ type: Attr.ReservationToken, value: newToken });
    const out = ok(Class.Success, attrs);
    a.lastTid = tid;
    a.lastResponse = out;
    return out;
  }

  /** Seconds: the asked (or default) lifetime, at most relay.max_lifetime and never past the credentials' expiry. */
  private lifetime(asked: number | undefined, credentialExpires: number, now: number): number {
    const want = asked === undefined ? this.opts.defaultLifetime : asked;
    return Math.max(0, Math.min(want, this.opts.maxLifetime, credentialExpires - Math.floor(now / 1000)));
  }

  private onAllocationRequest(a: Allocation, m: StunMessage, now: number): Uint8Array {
    const ok = (attrs: StunAttr[]) => encode({ method: m.method, cls: Class.Success, tid: m.tid, attrs: [...attrs, SOFTWARE] }, { key: a.key, fingerprint: true });
    const fail = (code: number, reason: string) => {
      this.count(code);
      return encode({ method: m.method, cls: Class.Error, tid: m.tid, attrs: [{ type: Attr.ErrorCode, value: errorCode(code, reason) }, SOFTWARE] }, { key: a.key, fingerprint: true });
    };
    if (m.method === Method.Refresh) {
      const lifetime = this.lifetime(attrU32(m, Attr.Lifetime), a.credentialExpires, now);
      if (lifetime === 0) this.remove(a);
      else a.expires = now + lifetime * 1000;
      return ok([{ type: Attr.Lifetime, value: u32(lifetime) }]);
    }
    const peers = m.attrs.filter((x) => x.type === Attr.XorPeerAddress).map((x) => readXorAddress(x.value, m.tid));
    if (!peers.length || peers.some((p) => p === null)) return fail(StunError.BadRequest, "Bad Request: XOR-PEER-ADDRESS");
    if (!this.opts.allowLoopback && peers.some((p) => isLoopback(p!.address))) return fail(StunError.Forbidden, "Forbidden: peer address");
    if (m.method === Method.CreatePermission) {
      for (const p of peers) a.permit(p!.address, now);
      return ok([]);
    }
    const n = readChannelNumber(m);
    if (n === undefined || n < 0x4000 || n > 0x7fff || peers.length !== 1) return fail(StunError.BadRequest, "Bad Request: CHANNEL-NUMBER");
    if (!a.bind(n, peers[0]!.address, peers[0]!.port, now)) return fail(StunError.BadRequest, "Bad Request: channel or peer bound otherwise");
    return ok([]);
  }

  private onSend(client: string, m: StunMessage, now: number): void {
    const a = this.byClient.get(client);
    if (!a) return;
    const peer = readXorAddress(attr(m, Attr.XorPeerAddress), m.tid);
    const data = attr(m, Attr.Data);
    if (!peer || !data) return;
    this.toPeer(a, data, peer.address, peer.port, now);
  }

  private toPeer(a: Allocation, data: Uint8Array, address: string, port: number, now: number): void {
    if (!a.permitted(address, now) || !a.admit(data.length, now)) return void this.counters.dropped++;
    this.counters.packetsOut++;
    this.counters.bytesOut += data.length;
    this.ppsCount++;
    a.relayedOut++;
    a.socket.send(data, port, address);
  }

  // ---- peer side -------------------------------------------------------------

  private fromPeer(a: Allocation, data: Uint8Array, port: number, address: string): void {
    const now = Date.now();
    if (!a.permitted(address, now) || !a.admit(data.length, now)) return void this.counters.dropped++;
    this.counters.packetsIn++;
    this.counters.bytesIn += data.length;
    this.ppsCount++;
    a.relayedIn++;
    const ch = a.channelTo(address, port, now);
    let out: Uint8Array;
    if (ch) out = encodeChannelData(ch.number, data);
    else {
      const tid = randomBytes(12);
      out = encode({ method: Method.Data, cls: Class.Indication, tid, attrs: [
        { type: Attr.XorPeerAddress, value: xorAddress({ family: 4, address: normalIp(address), port }, tid) },
        { type: Attr.Data, value: data },
      ] });
    }
    this.sock!.send(out, a.clientPort, a.clientAddress);
  }

  // ---- helpers -------------------------------------------------------------------

  /** Binds a relayed socket (even port if asked, and the next one reserved if asked). */
  private async bindRelayed(even: boolean, reserve: boolean): Promise<[{ socket: RelaySocket; sink: PeerSink; port: number }, { socket: RelaySocket; sink: PeerSink; port: number } | null] | null> {
    const { minPort, maxPort } = this.opts;
    for (let attempt = 0; attempt < 32; attempt++) {
      let port = minPort > 0 ? minPort + Math.floor(Math.random() * (maxPort - minPort + 1)) : 0;
      if ((even || reserve) && port > 0) port &= ~1;
      if (port > 0 && reserve && port + 1 > maxPort) continue;
      const first = await this.bindOne(port);
      if (!first) continue;
      if (even && first.port % 2 !== 0) {
        first.socket.close();
        continue;
      }
      if (!reserve) return [first, null];
      const second = await this.bindOne(first.port + 1);
      if (second) return [first, second];
      first.socket.close();
    }
    return null;
  }

  private async bindOne(port: number): Promise<{ socket: RelaySocket; sink: PeerSink; port: number } | null> {
    const sink: PeerSink = { target: null };
    try {
      const socket = await Bun.udpSocket({
        hostname: this.opts.publicIp || this.opts.host,
        port,
        binaryType: "uint8array",
        socket: {
          data: (_s, data, p, addr) => sink.target?.(data, p, addr),
          error: () => {}, // ICMP unreachable from a peer: the next packet is tried again
        },
      });
      return { socket, sink, port: socket.port };
    } catch {
      return null;
    }
  }

  private challenge(m: StunMessage, code: number, reason: string, now: number): Uint8Array {
    if (code !== StunError.Unauthorized) this.count(code);
    return encode({ method: m.method, cls: Class.Error, tid: m.tid, attrs: [
      { type: Attr.ErrorCode, value: errorCode(code, reason) },
      { type: Attr.Realm, value: text(this.opts.realm) },
      { type: Attr.Nonce, value: text(this.nonces.issue(now)) },
      SOFTWARE,
    ] }, { fingerprint: true });
  }

  private error(m: StunMessage, code: number, reason: string): Uint8Array {
    this.count(code);
    return encode({ method: m.method, cls: Class.Error, tid: m.tid, attrs: [{ type: Attr.ErrorCode, value: errorCode(code, reason) }, SOFTWARE] }, { fingerprint: true });
  }

  private count(code: number): void {
    this.counters.refused.set(code, (this.counters.refused.get(code) ?? 0) + 1);
  }

  private remove(a: Allocation): void {
    a.close();
    if (this.byClient.get(a.client) === a) this.byClient.delete(a.client);
    const set = this.byDevice.get(a.device);
    set?.delete(a);
    if (set && set.size === 0) this.byDevice.delete(a.device);
  }

  private sweep(now: number): void {
    this.ppsLastSecond = this.ppsCount;
    this.ppsCount = 0;
    const o = this.opts;
    this.load = Math.round(Math.max(
      (this.ppsLastSecond / Math.max(1, o.capacityPps)) * 100,
      (this.lag.recentMs / Math.max(1, o.capacityLagMs)) * 100,
      o.maxAllocations > 0 ? (this.byClient.size / o.maxAllocations) * 100 : 0,
    ));
    for (const a of [...this.byClient.values()]) {
      if (a.expires <= now || a.credentialExpires * 1000 <= now) this.remove(a);
      else a.sweep(now);
    }
    for (const [k, r] of this.reservations) {
      if (r.expires <= now) {
        r.socket.close();
        this.reservations.delete(k);
      }
    }
    for (const [d, until] of this.revoked) if (until <= now) this.revoked.delete(d);
  }
}


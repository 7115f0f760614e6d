/**
 * A TURN client over node:dgram (RFC 8656, UDP): allocate with long-term
 * credentials (the TURN REST ones of iq calls.turn), permissions, channels,
 * Send indications or ChannelData, and the Data that comes back. For the CLI
 * (`switchboard call`), the load generator and tests; browsers use their own
 * WebRTC stack with the same credentials.
 *
 * @example
 * const r = await TurnClient.allocate({ host, port, username, password });
 * if (!r.ok) throw new Error(`${r.code} ${r.reason}`);
 * r.client.onData = (data, from) => ...;
 * await r.client.channelBind(peer);
 * r.client.send(peer, bytes);
 */
import { createSocket, type Socket } from "node:dgram";
import { randomBytes } from "node:crypto";
import {
  Attr, Class, Method, attr, attrString, attrU32, channelNumber, decode, decodeChannelData, encode, encodeChannelData,
  isChannelData, longTermKey, readErrorCode, readXorAddress, text, u32, xorAddress, type Address, type StunAttr, type StunMessage,
} from "../protocol/stun.ts";

export type TurnResult<T> = ({ ok: true } & T) | { ok: false; code: number; reason: string };

export interface TurnOptions {
  host: string;
  port: number;
  username: string;
  password: string;
  /** Seconds asked for; the relay may grant less. */
  lifetime?: number;
  /** Milliseconds before the first retransmission (doubles; 4 tries). */
  rto?: number;
}

export class TurnClient {
  /** Called for every datagram a peer sent to the relayed address. */
  onData: (data: Uint8Array, from: Address) => void = () => {};
  relayed!: Address;
  mapped: Address | null = null;
  lifetime = 0;
  private realm = "";
  private nonce = "";
  private key: Uint8Array | null = null;
  private pending = new Map<string, (m: StunMessage) => void>();
  private channels = new Map<string, number>();
  private nextChannel = 0x4000;
  private closed = false;
  /** Peers with a permission (channels hold one too), renewed with the channels by `keep`. */
  private permitted = new Set<string>();
  private keep: ReturnType<typeof setInterval> | null = null;

  private constructor(private readonly sock: Socket, private readonly opts: TurnOptions) {
    sock.on("message", (b: Buffer) => this.onMessage(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    sock.on("error", () => {}); // ICMP unreachable when the relay is gone: requests time out instead
  }

  static async allocate(opts: TurnOptions): Promise<TurnResult<{ client: TurnClient }>> {
    const sock = createSocket(opts.host.includes(":") ? "udp6" : "udp4");
    await new Promise<void>((res) => sock.bind(0, res));
    const c = new TurnClient(sock, opts);
    const attrs: StunAttr[] = [{ type: Attr.RequestedTransport, value: new Uint8Array([17, 0, 0, 0]) }];
    if (opts.lifetime) attrs.push({ type: Attr.Lifetime, value: u32(opts.lifetime) });
    const r = await c.request(Method.Allocate, () => attrs);
    if (!r.ok) {
      c.shut();
      return r;
    }
    const relayed = readXorAddress(attr(r.m, Attr.XorRelayedAddress), r.m.tid);
    if (!relayed) {
      c.shut();
      return { ok: false, code: 0, reason: "no XOR-RELAYED-ADDRESS in the relay's answer" };
    }
    c.relayed = relayed;
    c.mapped = readXorAddress(attr(r.m, Attr.XorMappedAddress), r.m.tid);
    c.lifetime = attrU32(r.m, Attr.Lifetime) ?? 0;
    c.keepAlive();
    return { ok: true, client: c };
  }

  /**
   * Keeps the allocation, its permissions (5 min on the relay) and channels (10 min) alive for as long as the
   * client is open: every minute, a Refresh when less than two minutes of lifetime are left, and every fourth
   * minute the permissions and channels again. The timer does not hold the process open.
   */
  private keepAlive(): void {
    let ticks = 0;
    let since = Date.now();
    this.keep = setInterval(() => {
      ticks++;
      const left = this.lifetime - (Date.now() - since) / 1000;
      if (left < 120) void this.refresh(this.opts.lifetime ?? 600).then((r) => r.ok && (since = Date.now()));
      if (ticks % 4 === 0) {
        for (const k of this.channels.keys()) {
          const [address, port] = k.split("|");
          void this.channelBind({ address: address!, port: Number(port) });
        }
        const peers = [...this.permitted].map((address) => ({ address }));
        if (peers.length) void this.createPermission(...peers);
      }
    }, 60_000);
    this.keep.unref?.();
  }

  async createPermission(...peers: Pick<Address, "address">[]): Promise<TurnResult<object>> {
    for (const p of peers) this.permitted.add(p.address);
    const r = await this.request(Method.CreatePermission, (tid) => peers.map((p) => ({ type: Attr.XorPeerAddress, value: xorAddress({ family: 4, address: p.address, port: 0 }, tid) })));
    return r.ok ? { ok: true } : r;
  }

  /** Binds (or refreshes) a channel to `peer`; later sends to it go as ChannelData (4 bytes of overhead instead of 36). */
  async channelBind(peer: Pick<Address, "address" | "port">): Promise<TurnResult<{ channel: number }>> {
    const k = `${peer.address}|${peer.port}`;
    const n = this.channels.get(k) ?? this.nextChannel++;
    const r = await this.request(Method.ChannelBind, (tid) => [
      { type: Attr.ChannelNumber, value: channelNumber(n) },
      { type: Attr.XorPeerAddress, value: xorAddress({ family: 4, address: peer.address, port: peer.port }, tid) },
    ]);
    if (!r.ok) return r;
    this.channels.set(k, n);
    return { ok: true, channel: n };
  }

  async refresh(lifetime: number): Promise<TurnResult<{ lifetime: number }>> {
    const r = await this.request(Method.Refresh, () => [{ type: Attr.Lifetime, value: u32(lifetime) }]);
    if (!r.ok) return r;
    this.lifetime = attrU32(r.m, Attr.Lifetime) ?? 0;
    return { ok: true, lifetime: this.lifetime };
  }

  /** Sends `data` to `peer` through the relay (needs a permission or channel for it). */
  send(peer: Pick<Address, "address" | "port">, data: Uint8Array): void {
    if (this.closed) throw new Error("TurnClient.send: the client is closed");
    const n = this.channels.get(`${peer.address}|${peer.port}`);
    if (n !== undefined) return this.raw(encodeChannelData(n, data));
    const tid = randomBytes(12);
    this.raw(encode({ method: Method.Send, cls: Class.Indication, tid, attrs: [
      { type: Attr.XorPeerAddress, value: xorAddress({ family: 4, address: peer.address, port: peer.port }, tid) },
      { type: Attr.Data, value: data },
    ] }));
  }

  /** Releases the allocation (Refresh lifetime 0) and closes the socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.refresh(0).catch(() => {});
    this.shut();
  }

  private shut(): void {
    this.closed = true;
    if (this.keep) clearInterval(this.keep);
    for (const f of this.pending.values()) f(TIMEOUT);
    this.pending.clear();
    try { this.sock.close(); } catch {}
  }

  private raw(b: Uint8Array): void {
    this.sock.send(b, this.opts.port, this.opts.host);
  }

  private onMessage(b: Uint8Array): void {
    if (isChannelData(b)) {
      const cd = decodeChannelData(b);
      if (!cd) return;
      for (const [k, n] of this.channels) {
        if (n !== cd.channel) continue;
        const [address, port] = k.split("|");
        this.onData(cd.data, { family: 4, address: address!, port: Number(port) });
        return;
      }
      return;
    }
    const m = decode(b);
    if (!m) return;
    if (m.cls === Class.Indication && m.method === Method.Data) {
      const from = readXorAddress(attr(m, Attr.XorPeerAddress), m.tid);
      const data = attr(m, Attr.Data);
      if (from && data) this.onData(data, from);
      return;
    }
    const k = Buffer.from(m.tid).toString("hex");
    const f = this.pending.get(k);
    if (f) {
      this.pending.delete(k);
      f(m);
    }
  }

  /** A request with retransmissions, answering the 401/438 challenge once with the long-term key. */
  private async request(method: number, build: (tid: Uint8Array) => StunAttr[], retried = 0): Promise<TurnResult<{ m: StunMessage }>> {
    if (this.closed) return { ok: false, code: 0, reason: "closed" };
    const tid = randomBytes(12);
    const auth: StunAttr[] = this.key
      ? [{ type: Attr.Username, value: text(this.opts.username) }, { type: Attr.Realm, value: text(this.realm) }, { type: Attr.Nonce, value: text(this.nonce) }]
      : [];
    const b = encode({ method, cls: Class.Request, tid, attrs: [...build(tid), ...auth] }, this.key ? { key: this.key, fingerprint: true } : { fingerprint: true });
    const m = await this.transact(tid, b);
    if (m === TIMEOUT) return { ok: false, code: 0, reason: "timeout: no answer from the relay" };
    if (m.cls === Class.Success) return { ok: true, m };
    const e = readErrorCode(m) ?? { code: 0, reason: "error without ERROR-CODE" };
    if ((e.code === 401 || e.code === 438) && retried < 2) {
      const realm = attrString(m, Attr.Realm);
      const nonce = attrString(m, Attr.Nonce);
      if (nonce) this.nonce = nonce;
      if (realm) this.realm = realm;
      if (e.code === 401 && this.key && retried > 0) return { ok: false, ...e };
      this.key = longTermKey(this.opts.username, this.realm, this.opts.password);
      return this.request(method, build, retried + 1);
    }
    return { ok: false, ...e };
  }

  private transact(tid: Uint8Array, b: Uint8Array): Promise<StunMessage | typeof TIMEOUT> {
    const k = Buffer.from(tid).toString("hex");
    return new Promise((resolve) => {
      let rto = this.opts.rto ?? 500;
      let tries = 0;
      let timer: ReturnType<typeof setTimeout>;
      const fire = () => {
        if (tries++ >= 4) {
          this.pending.delete(k);
          return resolve(TIMEOUT);
        }
        this.raw(b);
        timer = setTimeout(fire, rto);
        rto *= 2;
      };
      this.pending.set(k, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      fire();
    });
  }
}

const TIMEOUT = Symbol("timeout") as unknown as StunMessage;

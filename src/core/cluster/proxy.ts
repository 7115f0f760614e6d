/** The ProxyConn of forward.ts: a device connected to another node, as the node running its operation sees it. */
import { encodeBody } from "../../protocol/codec.ts";
import { Conn, ConnState, type ConnShared, type ConnSocket } from "../../transport/connection.ts";

/** Where a ProxyConn's frames go: back over the link to the device's node (Forwarder.reply). */
export interface ProxyReplies {
  reply(p: ProxyConn, body: Uint8Array): void;
}

/** The socket of a ProxyConn: it never writes (sendBody goes over the link) and never reads. */
const NO_SOCKET: ConnSocket = { write: () => -1, end: () => {}, pause: () => {}, resume: () => {}, readyState: 1, remoteAddress: "cluster-link" };
const PROXY_SHARED: ConnShared = { maxFrame: 1 << 20, outboundLimit: 1 << 30, onClosed: () => {}, onOutBytes: () => {}, onOutFrame: () => {} };

/**
 * A device connected to another node, as the group's node sees it while running that device's group operation:
 * everything sent to it goes back over the link (`x`) to the connection it came from.
 */
export class ProxyConn extends Conn {
  constructor(private readonly fwd: ProxyReplies, readonly origin: string, readonly originConn: number, account: string, device: number) {
    super(NO_SOCKET, "tcp", PROXY_SHARED, performance.now());
    this.account = account;
    this.device = device;
    this.state = ConnState.READY;
  }

  override sendBody(body: Uint8Array): void {
    this.fwd.reply(this, body);
  }

  /** Conn.send encodes into the encoder's scratch and copies it into the socket's buffer; the link needs a body of its own. */
  override send(stanza: object): void {
    this.fwd.reply(this, encodeBody(stanza));
  }

  /** The device's own connection, on its node, is what closes; nothing here does. */
  override close(): void {}
}

/**
 * The ProxyConns of other nodes' devices, by (node, connection number): made at their first operation here,
 * dropped when that connection closes on its node (item `z`, forward.ts), and beyond that bounded as two
 * generations of `max / 2` (for the notices lost with a crash of the device's node).
 */
export class ProxyTable {
  private young = new Map<string, ProxyConn>();
  private old = new Map<string, ProxyConn>();

  constructor(private readonly fwd: ProxyReplies, private readonly max: number) {}

  get(from: string, a: string, d: number, c: number): ProxyConn {
    const key = `${from}\u0000${c}`;
    let p = this.young.get(key) ?? this.old.get(key);
    if (p === undefined || p.account !== a || p.device !== d) p = new ProxyConn(this.fwd, from, c, a, d);
    if (this.young.size >= this.max / 2) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, p);
    return p;
  }

  /** The device's connection `c` on node `from` closed: its ProxyConn goes (closed, for anything still holding it). */
  drop(from: string, c: number): void {
    const key = `${from}\u0000${c}`;
    for (const m of [this.young, this.old]) {
      const p = m.get(key);
      if (p !== undefined) (p.state = ConnState.CLOSED), m.delete(key);
    }
  }

  get size(): number {
    return this.young.size + this.old.size;
  }
}

/**
 * The chat server's side of its TURN relays (calls.relay_control): tells them
 * a device is revoked (a signed POST /revoke, so its relayed flows end at
 * once), and reads their load (GET /load, once a second) for shedding new
 * calls. Lives in core because it is I/O; the calls module holds one.
 */
import { createHmac } from "node:crypto";
import { log } from "./log.ts";

export interface RelayLoadView {
  /** Highest load over the relays that answered, in percent of their capacity (0 when none is configured or none answered). */
  percent: number;
  /** Relays that did not answer the last poll. */
  down: number;
}

const SIGNATURE_HEADER = "x-switchboard-signature"; // src/transport/relay/auth.ts CONTROL_SIGNATURE_HEADER

export class RelayControl {
  readonly load: RelayLoadView = { percent: 0, down: 0 };
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly urls: readonly string[], private readonly secret: string, pollMs = 1000) {
    if (urls.length && !secret) throw new Error("calls.relay_control is set but calls.secret is empty: the relays check the signature with it");
    if (urls.length) {
      this.timer = setInterval(() => void this.poll(), pollMs);
      void this.poll();
    }
  }

  /** Every relay ends `device`'s allocations (`account/device`); resolves when all answered or failed (logged). */
  async revoke(device: string): Promise<number> {
    const body = JSON.stringify({ device, ts: Date.now() });
    const sig = createHmac("sha256", this.secret).update(body).digest("hex");
    let ended = 0;
    await Promise.all(this.urls.map(async (u) => {
      try {
        const r = await fetch(`${u}/revoke`, { method: "POST", body, headers: { [SIGNATURE_HEADER]: sig }, signal: AbortSignal.timeout(2000) });
        if (r.ok) ended += ((await r.json()) as { ended: number }).ended;
        else log.warn("relay refused a revocation", { relay: u, status: r.status });
      } catch (e) {
        log.warn("relay unreachable for a revocation; its allocations end at their credentials' expiry", { relay: u, err: e as Error });
      }
    }));
    return ended;
  }

  private async poll(): Promise<void> {
    let percent = 0;
    let down = 0;
    await Promise.all(this.urls.map(async (u) => {
      try {
        const r = await fetch(`${u}/load`, { signal: AbortSignal.timeout(900) });
        const l = (await r.json()) as { load?: number };
        percent = Math.max(percent, Number(l.load) || 0);
      } catch {
        down++;
      }
    }));
    this.load.percent = percent;
    this.load.down = down;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

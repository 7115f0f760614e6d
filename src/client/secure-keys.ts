/**
 * This device's keys on the server, for SecureClient: published on each
 * connection (or the signed prekey rotated when older than `spkMaxAgeMs`),
 * one-time prekeys topped up to `otkTarget` then and on `evt keys low`.
 * Every private half is saved before the server can hand out its public one.
 */
import { ErrorCode } from "../protocol/errors.ts";
import { ServerError, type SwitchboardClient } from "./client.ts";
import type { E2EDevice } from "./crypto/index.ts";
import type { SecureOptions } from "./secure-types.ts";

const OTK_BATCH = 100;
const DAY = 86_400_000;

export class KeyUpkeep {
  private setup: Promise<void> = Promise.resolve();
  private published = false;
  private publishWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private readonly otkTarget: number;
  private readonly spkMaxAgeMs: number;

  constructor(
    private readonly client: SwitchboardClient,
    private readonly e2e: E2EDevice,
    opts: SecureOptions,
    /** Stores the state; resolves once it is stored. */
    private readonly save: () => Promise<void>,
    /** A background task failed (it is tried again on the next connection). */
    private readonly onError: (e: Error) => void,
  ) {
    this.otkTarget = opts.otkTarget ?? 100;
    this.spkMaxAgeMs = opts.spkMaxAgeMs ?? 7 * DAY;
  }

  /** See SecureClient.whenPublished. */
  whenPublished(): Promise<void> {
    return this.published ? this.setup : new Promise((resolve, reject) => this.publishWaiters.push({ resolve, reject }));
  }

  /** A connection is ready: publish (or rotate) and top up; errors go to onError, and to the waiters when the server refused. */
  onReady(): void {
    this.setup = this.publish().then(
      () => {
        this.published = true;
        for (const w of this.publishWaiters.splice(0)) w.resolve();
      },
      (e) => {
        this.onError(e as Error);
        // The server refused (a bad key, a cap): waiting would never end, so the waiters learn why. A dropped
        // connection is not final: the next `ready` publishes again and settles them then.
        if (e instanceof ServerError) for (const w of this.publishWaiters.splice(0)) w.reject(e);
      },
    );
  }

  private async publish(): Promise<void> {
    const c = this.client;
    const own = await c.request<{ devices: { d: number; kv?: number }[] }>("devices", { u: c.account });
    const mine = own.devices.find((x) => x.d === c.device);
    if ((mine?.kv ?? 0) !== this.e2e.kv) {
      const args = await this.e2e.publishArgs(Math.min(OTK_BATCH, this.otkTarget));
      await this.save(); // the private halves are on disk before the server can hand the public ones out
      await c.request("keys.publish", { ...args });
      c.forgetDevices(c.account);
    } else if (Date.now() - this.e2e.signedPreKey.created > this.spkMaxAgeMs) {
      const spk = await this.e2e.rotateSignedPreKey();
      await this.save();
      await c.request("keys.spk", { spk });
    }
    const { n } = await c.request<{ n: number }>("keys.count");
    await this.refill(n);
  }

  /** Uploads one-time prekeys until the server holds `otkTarget` (or its maximum). */
  async refill(n: number): Promise<void> {
    let have = n;
    let max = Infinity;
    while (have < this.otkTarget) {
      const batch = Math.min(OTK_BATCH, this.otkTarget - have, max - have);
      if (batch <= 0) return;
      const otk = await this.e2e.generateOneTimeKeys(batch);
      await this.save();
      try {
        have = (await this.client.request<{ n: number }>("keys.otk", { otk })).n;
      } catch (e) {
        if (e instanceof ServerError && e.code === ErrorCode.TOO_MANY_KEYS) {
          max = (await this.client.request<{ n: number; max: number }>("keys.count")).max;
          continue;
        }
        throw e;
      }
    }
  }
}

/**
 * End-to-end encryption as the CLI uses it: a SecureClient that may leave
 * incoming messages alone, key publication for a new device, and the
 * sentences for security-code changes, undecryptable messages and safety
 * numbers.
 */
import { existsSync, rmSync } from "node:fs";
import { SwitchboardClient, type ConnectOptions, type DeviceEvent } from "../client/client.ts";
import { keyToFile, writeKeyFile, type DeviceKey, type KeyFile } from "../client/keys.ts";
import { SecureClient, statePathFor, type DevicesChange, type IdentityChange, type Undecryptable } from "../client/secure.ts";
import { formatSafetyNumber } from "../client/crypto/index.ts";
import { explain, serverOf, ticketPathFor, ticketSlotFor } from "./connect.ts";
import { plural } from "./util.ts";

type ClientEvent = Parameters<SwitchboardClient["on"]>[0];

/**
 * A SecureClient on `client` (state file `statePath`) that does not subscribe
 * to the client events in `ignore`. SecureClient subscribes to message, ready,
 * keys, group and device in its constructor and has no option to leave one
 * out, so `client.on` is shadowed for the constructor's duration (the state
 * is loaded before: the constructor is synchronous). What needs
 * it: a command that does not acknowledge deliveries (one-shot commands,
 * `listen --no-ack`) must not decrypt with the device's state, since the
 * ratchet decrypts a message once: the redelivery on the next `listen` would
 * be dropped as a duplicate, unseen. (The CLI tests catch it if SecureClient
 * subscribes some other way: "one-shot commands leave the device's incoming
 * messages queued for its next listen".)
 */
export async function secureClient(client: SwitchboardClient, statePath: string, ignore: ClientEvent[] = []): Promise<SecureClient> {
  const state = await SecureClient.load(client, { statePath });
  if (ignore.length === 0) return new SecureClient(client, { statePath }, state);
  const on = client.on;
  const skip = new Set<string>(ignore);
  Object.defineProperty(client, "on", {
    configurable: true,
    value(this: SwitchboardClient, event: ClientEvent, fn: never) {
      return skip.has(event) ? this : on.call(this, event, fn);
    },
  });
  try {
    return new SecureClient(client, { statePath }, state);
  } finally {
    delete (client as { on?: unknown }).on; // the prototype's again
  }
}

/** Resolves when the device's keys are on the server; rejects with the first background failure before that. */
export function published(s: SecureClient): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (e: Error) => {
      s.off("error", failed);
      reject(e);
    };
    s.on("error", failed); // failures that are not the server's refusal (whenPublished rejects on those)
    s.whenPublished().then(
      () => {
        s.off("error", failed);
        resolve();
      },
      failed,
    );
  });
}

/**
 * Publishes a new device's end-to-end keys (identity, signed prekey, one-time
 * prekeys) and writes its state file, so that others can write to it
 * encrypted before it is first used. Returns why it failed, or null: the
 * device exists either way, and any later use publishes what is missing.
 */
export async function publishNewDevice(kf: KeyFile, keyPath: string, conn: ConnectOptions): Promise<string | null> {
  // Non-receiving (PROTOCOL.md §4.6): it only publishes, and takes nothing from the new device's queue.
  const client = new SwitchboardClient({ ...conn, key: kf, userAgent: "switchboard-cli", reconnect: false, autoAck: false, rx: false, ticketSlot: ticketSlotFor(keyPath) });
  try {
    const s = await secureClient(client, statePathFor(keyPath), ["message"]);
    const done = published(s);
    await client.connect();
    await done;
    await s.close();
    return null;
  } catch (e) {
    return explain(e, conn).message;
  } finally {
    await client.close();
  }
}

/**
 * Refuses a key file name already taken, and a state file left from an earlier
 * device (it would be refused: it belongs to another device), before the server
 * creates a device.
 */
export function checkNewKeyPath(keyPath: string): void {
  if (existsSync(keyPath)) throw new Error(`${keyPath} exists already; it is the key of an enrolled device. Pass --key with a new file name`);
  const state = statePathFor(keyPath);
  if (existsSync(state)) throw new Error(`${state} exists already; it is the end-to-end state of an earlier device. Move it away, or pass --key with a new file name`);
}

/** Writes a new device's key file (0600), publishes its end-to-end keys, prints `report`, and warns when they are not published. */
export async function keepNewDevice(key: DeviceKey, r: { account: string; device: number }, conn: ConnectOptions, keyPath: string, report: () => void): Promise<void> {
  const kf = keyToFile(key, r.account, r.device, serverOf(conn));
  writeKeyFile(keyPath, kf);
  rmSync(ticketPathFor(keyPath), { force: true }); // an earlier device's ticket: refused, and a failed login for the limits
  const unpublished = await publishNewDevice(kf, keyPath, conn);
  report();
  if (unpublished) console.error(`switchboard: warning: the device's end-to-end keys are not published yet (${unpublished}); its next listen, chat or send publishes them`);
}

/** The sentence a person reads for an `undecryptable` reason (crypto/session.ts, crypto/senderkeys.ts). */
function whyUndecryptable(reason: string): string {
  switch (reason) {
    case "bad_envelope":
    case "bad_version":
      return "it was not end-to-end encrypted (sent with --plain?), or by a newer client";
    case "notice:no_keys":
      return "the sender found no end-to-end keys for this device";
    case "no_session":
      return "this device has no session with the sender's (its end-to-end state was replaced or lost?)";
    case "bad_mac":
      return "it failed authentication: altered on the way, or not meant for this device's session";
    case "no_sender_key":
      return "the sender's group key has not arrived here";
    default:
      return reason;
  }
}

/** A device's new keys; for one of our own devices the code changed with everyone, not "with" ourselves. */
export function codeChanged(e: IdentityChange, me: string, how: string): string {
  if (e.account === me) return `your device ${e.device} has new keys: your security codes with everyone changed; ${how}`;
  return `security code with ${e.account} changed: ${e.account}'s device ${e.device} has new keys; ${how}`;
}

/** "device 3 added, devices 1, 2 removed" */
function deviceChanges(e: DevicesChange): string {
  const part = (ds: number[], what: string) => (ds.length ? [`${plural(ds.length, "device")} ${ds.join(", ")} ${what}`] : []);
  return [...part(e.added, "added"), ...part(e.removed, "removed")].join(", ");
}

/** The warning for a changed device list: the safety number changed, and who may now read what is sent. */
export function devicesChangedLine(e: DevicesChange, me: string, how: string): string {
  if (e.account === me) return `your account's devices changed (${deviceChanges(e)}): your security codes changed; ${how}`;
  return `security code with ${e.account} changed: ${e.account}'s devices changed (${deviceChanges(e)}), and what you send goes to its devices; ${how}`;
}

/** What a device is told when its own account gains or loses a device. */
export function deviceEventLine(ev: DeviceEvent, keyPath: string): string {
  if (ev.op === "revoked") return `device ${ev.device} of your account was revoked`;
  return `a new device was linked to your account: device ${ev.device}${ev.name !== undefined ? ` "${ev.name}"` : ""}; if that was not you, revoke it (switchboard device revoke --key ${keyPath} --device ${ev.device})`;
}

export const undecryptableLine = (u: Undecryptable) =>
  `  ✗ a message from ${u.from} (device ${u.fromDevice}) could not be decrypted: ${whyUndecryptable(u.reason)}`;

/** Twelve groups of five digits in three rows, as Signal shows a safety number. */
export function safetyRows(n: string): string[] {
  const g = formatSafetyNumber(n).split(" ");
  return [0, 4, 8].map((i) => g.slice(i, i + 4).join(" "));
}

/** "safety number of alice and bob", or of one's own devices. */
export const safetyTitle = (me: string, other: string) => (other === me ? `safety number of your account's devices (${me})` : `safety number of ${me} and ${other}`);

/** The safety number with `account`, or an error a person can act on. */
export async function safetyOf(s: SecureClient, account: string): Promise<string> {
  try {
    return await s.safetyNumber(account);
  } catch (e) {
    if (/no identity keys/.test((e as Error).message)) {
      throw new Error(
        `${account === s.client.account ? "your account" : account} has no device with end-to-end keys yet
  a device publishes them when it enrolls or links, or on its next listen, chat or send (not with --plain)`,
      );
    }
    throw e;
  }
}

/** Devices of `account` (ours excluded) that have no end-to-end keys: an encrypted send gives them a notice, not the message. */
export async function withoutKeys(c: SwitchboardClient, account: string): Promise<number[]> {
  return (await c.devices(account)).filter((d) => !(account === c.account && d === c.device) && c.keyVersion(account, d) === 0);
}

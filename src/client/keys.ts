/**
 * Device identity: an Ed25519 key pair, kept in a JSON key file (mode 0600)
 * together with the account and device id it was enrolled as.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { chmodSync, existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

export interface DeviceKey {
  /** Raw 32-byte public key. */
  publicKey: Uint8Array;
  privateKey: KeyObject;
}

export interface KeyFile {
  account: string;
  device: number;
  /** base64 raw public key */
  pk: string;
  /** base64 PKCS#8 DER private key */
  sk: string;
  /** Where the device enrolled, for convenience of the CLI. */
  server?: { host: string; port: number; tls: boolean };
}

export function generateDeviceKey(): DeviceKey {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  return { publicKey: rawPublicKey(publicKey), privateKey };
}

export function rawPublicKey(k: KeyObject): Uint8Array {
  const jwk = k.export({ format: "jwk" }) as { x: string };
  return new Uint8Array(Buffer.from(jwk.x, "base64url"));
}

export function signProof(key: DeviceKey, transcript: Uint8Array): Uint8Array {
  return new Uint8Array(sign(null, transcript, key.privateKey));
}

export function keyToFile(key: DeviceKey, account: string, device: number, server?: KeyFile["server"]): KeyFile {
  const kf: KeyFile = {
    account,
    device,
    pk: Buffer.from(key.publicKey).toString("base64"),
    sk: (key.privateKey.export({ format: "der", type: "pkcs8" }) as Buffer).toString("base64"),
  };
  if (server) kf.server = server;
  return kf;
}

export function keyFromFile(kf: KeyFile): DeviceKey {
  const privateKey = createPrivateKey({ key: Buffer.from(kf.sk, "base64"), format: "der", type: "pkcs8" });
  const publicKey = rawPublicKey(createPublicKey(privateKey));
  if (Buffer.from(publicKey).toString("base64") !== kf.pk) throw new Error("key file: pk does not match sk; the file is corrupt");
  return { publicKey, privateKey };
}

export function writeKeyFile(path: string, kf: KeyFile): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(kf, null, 2) + "\n", { mode: 0o600 });
  chmodSync(path, 0o600);
}

export function readKeyFile(path: string): KeyFile {
  if (!existsSync(path)) throw new Error(`key file ${path} does not exist; enroll a device first (switchboard device enroll)`);
  let kf: KeyFile;
  try {
    kf = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`key file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof kf.account !== "string" || typeof kf.device !== "number" || typeof kf.pk !== "string" || typeof kf.sk !== "string") {
    throw new Error(`key file ${path} lacks account, device, pk or sk`);
  }
  return kf;
}

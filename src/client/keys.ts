/**
 * Device identity: an Ed25519 key pair, kept in a JSON key file (mode 0600)
 * together with the account and device id it was enrolled as.
 */
// Namespace imports, resolved when a function is called: a bundle that still reaches this module
// for the browser (not through "#node-keys", which maps to keys-browser.ts there) builds, because
// the bundler's stand-ins for node:crypto and node:fs lack some of these names and named imports
// would make that a build error.
import * as nodeCrypto from "node:crypto";
import * as fs from "node:fs";
import * as nodePath from "node:path";
import type { KeyObject } from "node:crypto";

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
  const { publicKey, privateKey } = nodeCrypto.generateKeyPairSync("ed25519");
  return { publicKey: rawPublicKey(publicKey), privateKey };
}

export function rawPublicKey(k: KeyObject): Uint8Array {
  const jwk = k.export({ format: "jwk" }) as { x: string };
  return new Uint8Array(Buffer.from(jwk.x, "base64url"));
}

export function signProof(key: DeviceKey, transcript: Uint8Array): Uint8Array {
  return new Uint8Array(nodeCrypto.sign(null, transcript, key.privateKey));
}

/** The login signer of a key file (the SDK's default when `ClientOptions.sign` is not given). */
export function fileSigner(kf: KeyFile): (transcript: Uint8Array) => Uint8Array {
  const key = keyFromFile(kf);
  return (transcript) => signProof(key, transcript);
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
  const privateKey = nodeCrypto.createPrivateKey({ key: Buffer.from(kf.sk, "base64"), format: "der", type: "pkcs8" });
  const publicKey = rawPublicKey(nodeCrypto.createPublicKey(privateKey));
  if (Buffer.from(publicKey).toString("base64") !== kf.pk) throw new Error("key file: pk does not match sk; the file is corrupt");
  return { publicKey, privateKey };
}

export function writeKeyFile(path: string, kf: KeyFile): void {
  fs.mkdirSync(nodePath.dirname(path), { recursive: true });
  fs.writeFileSync(path, JSON.stringify(kf, null, 2) + "\n", { mode: 0o600 });
  fs.chmodSync(path, 0o600);
}

export function readKeyFile(path: string): KeyFile {
  if (!fs.existsSync(path)) throw new Error(`key file ${path} does not exist; enroll a device first (switchboard device enroll)`);
  let kf: KeyFile;
  try {
    kf = JSON.parse(fs.readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`key file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof kf.account !== "string" || typeof kf.device !== "number" || typeof kf.pk !== "string" || typeof kf.sk !== "string") {
    throw new Error(`key file ${path} lacks account, device, pk or sk`);
  }
  return kf;
}

/**
 * Load-test identities, written straight into a data directory's
 * accounts.db: one transaction for all accounts and devices, with Ed25519
 * keys generated here. Enrolling 30 000 devices over the wire would take
 * minutes (a connection, a hello, an enroll and a transaction each); this
 * takes a second or two. The schema is the one src/store/accounts.ts creates
 * (opening a SqliteAccountStore first makes sure it exists). The running
 * server does not cache accounts it has not seen, so this also works against
 * a live server on the same data directory.
 */
import { createPrivateKey, createPublicKey, randomBytes } from "node:crypto";
import { SqliteAccountStore } from "../src/store/accounts.ts";

export interface Identity {
  account: string;
  device: number;
  /** Ed25519 seed (32 bytes), hex. */
  seed: string;
}

/**
 * The account store class whose schema the file gets: this tree's, or, for a server spawned from another
 * tree (`--server-main`, an A/B against an older commit), that tree's own (target.ts), since an older
 * server refuses a file a newer one created (3337863 on fb6bf95's accounts.db: "no such column: last_seen").
 */
export type AccountStoreClass = new (dataDir: string) => Pick<SqliteAccountStore, "serverId" | "db" | "close">;

const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/** A fresh key: the seed for the worker, the raw public key for the database. */
export function newKey(): { seed: Buffer; pk: Buffer } {
  const seed = randomBytes(32);
  const sk = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(sk).export({ format: "der", type: "spki" }) as Buffer;
  return { seed, pk: spki.subarray(spki.length - 32) };
}

/** A short random tag that keeps the accounts of different runs on one data directory apart. */
export function runTag(): string {
  return randomBytes(4).toString("hex");
}

/**
 * Creates `names.length` accounts with one device each (device 1) and
 * returns their identities. Returns the server id too (informational).
 */
export function provision(dataDir: string, names: string[], Store: AccountStoreClass = SqliteAccountStore): { identities: Identity[]; serverId: string; ms: number } {
  const t0 = performance.now();
  const store = new Store(dataDir);
  const serverId = store.serverId();
  const db = store.db;
  const insA = db.prepare("INSERT INTO accounts (name, created, next_device) VALUES (?, ?, 2)");
  const insD = db.prepare("INSERT INTO devices (account, device, pk, name, created) VALUES (?, 1, ?, 'loadtest', ?)");
  const identities: Identity[] = [];
  const now = Date.now();
  try {
    db.transaction(() => {
      for (const name of names) {
        const { seed, pk } = newKey();
        insA.run(name, now);
        insD.run(name, pk, now);
        identities.push({ account: name, device: 1, seed: seed.toString("hex") });
      }
    }).immediate();
  } finally {
    insA.finalize();
    insD.finalize();
    store.close();
  }
  return { identities, serverId, ms: performance.now() - t0 };
}

/**
 * What modules see of the server. Modules hold no references to the
 * listeners or the stores' internals; everything goes through here, so a
 * reloaded module finds the same state.
 */
import type { Migration } from "../store/schema.ts";
import type { Database } from "bun:sqlite";
import type { Config } from "./config.ts";
import type { Accept } from "./accept.ts";
import type { Delivery } from "./delivery.ts";
import type { Directory } from "./directory.ts";
import type { Hooks } from "./hooks.ts";
import type { Metrics } from "./metrics.ts";
import type { Registry } from "./registry.ts";
import type { AccountStore } from "../store/accounts.ts";
import type { Conn } from "../transport/connection.ts";
import type { ErrorCode } from "../protocol/errors.ts";
import type { SeqAllocator } from "./seq.ts";
import type { Trace } from "./trace.ts";
import type { log } from "./log.ts";

export interface ServerContext {
  readonly config: Config;
  readonly accounts: AccountStore;
  readonly directory: Directory;
  readonly registry: Registry<Conn>;
  readonly delivery: Delivery;
  /** The acceptance pipeline of messages (dedup, durability, `sent`, fan-out to an account's devices): src/core/accept.ts. */
  readonly accept: Accept;
  readonly seqs: SeqAllocator;
  readonly metrics: Metrics;
  readonly hooks: Hooks;
  readonly log: typeof log;
  /** Delivery traces (GET /trace): a module records a message's acceptance, durability and reads; core the rest. */
  readonly trace: Trace;
  /** Sends an `err` frame (an expected failure or a refused stanza). */
  sendError(conn: Conn, code: ErrorCode, message: string, id?: string | number, detail?: unknown): void;
  /**
   * A module's own SQLite file, `data_dir/<name>.db`, opened as every store here is (WAL, the server's
   * durability): the same handle for the same name for the life of the process (it survives reloads),
   * closed at shutdown. Module data lives here, not in core's stores. `schema` is the file's migration
   * steps (src/store/schema.ts): core brings the file to their version before handing it out, or throws
   * (a file newer than the module, or damaged).
   */
  database(name: string, schema: readonly Migration[]): Database;
  /** Module state that survives reloads: the same object for the same name for the life of the process. */
  shared<T extends object>(name: string, init: () => T): T;
}

/**
 * `user add` and `user code`: administration beside the server. They write
 * its data directory directly (SQLite copes with the server running at the
 * same time); the store is imported only when one of them runs.
 */
import { existsSync } from "node:fs";
import { CONFIG_FLAGS, loadConfig, type Config } from "../core/config.ts";
import { defineCommand, type Command } from "./command.ts";
import { ErrorCode } from "../protocol/errors.ts";
import { reachable } from "./connect.ts";
import { out } from "./util.ts";

/**
 * The connection flags `device enroll` needs to reach this server from the same
 * machine: none for the defaults, else the host and port it listens on.
 */
export function enrollFlags(cfg: Config, flags: Record<string, string>): string {
  if (flags["--config"] !== undefined) return ` --config ${flags["--config"]}`;
  const [listener, tls] = cfg.tcp.port !== -1 ? [cfg.tcp, ""] : [cfg.tls, " --tls"];
  const host = reachable(listener.host);
  const port = listener.port === 0 ? "N" : String(listener.port);
  const defaults = host === "127.0.0.1" && listener.port === (tls ? 5223 : 5222);
  if (defaults && !tls) return "";
  return `${host === "127.0.0.1" ? "" : ` --host ${host}`}${tls}${defaults ? "" : ` --port ${port}`}${listener.port === 0 ? "   (N: the port in the server's listening line)" : ""}`;
}

export async function issueCode(command: "user add" | "user code", account: string, flags: Record<string, string>, json: boolean): Promise<number> {
  const { isInternalAccount } = await import("../core/session.ts");
  if (isInternalAccount(account)) {
    throw new Error(`account names starting with "switchboard." are reserved for the server's own use (its readiness canary)\n  choose another name`);
  }
  const cfg = loadConfig({ flags });
  if (!existsSync(cfg.dataDir)) {
    throw new Error(
      `data directory ${cfg.dataDir} does not exist\n  run this beside the server (it creates ./data when it starts: npm start, or switchboard serve), or pass --data-dir DIR of the server`,
    );
  }
  if (cfg.cluster.redis) {
    // An account lives in its home node's data dir: created elsewhere, its logins would be redirected away from it.
    const { homeNodeOf } = await import("./commands/cluster-status.ts");
    const home = homeNodeOf(account, cfg.cluster.nodes, cfg.dataDir);
    if (home !== cfg.cluster.nodeId) throw new Error(`account ${account} belongs on cluster node ${home}, not ${cfg.cluster.nodeId}
  run this beside node ${home}, with its configuration`);
  }
  const { SqliteAccountStore } = await import("../store/accounts.ts");
  const store = new SqliteAccountStore(cfg.dataDir, cfg.queue.durability);
  try {
    const ttl = cfg.auth.enrollCodeTtl;
    const r = command === "user add" ? store.createAccount(account, ttl) : store.newEnrollCode(account, ttl);
    if (!r.ok) {
      const hint = r.reason === ErrorCode.UNKNOWN_USER ? "\n  create it with `switchboard user add NAME`" : /exists/.test(r.message) ? "\n  for another enrollment code of it, run `switchboard user code NAME`" : "";
      throw new Error(r.message + hint);
    }
    if (json) out({ account, code: r.value.code, expires_in_s: ttl });
    else {
      const valid = ttl % 3600 === 0 ? `${ttl / 3600} h` : ttl % 60 === 0 ? `${ttl / 60} min` : `${ttl} s`;
      console.log(`${command === "user add" ? "created account" : "new enrollment code for"} ${account}`);
      console.log(`enrollment code (one use, valid ${valid}${command === "user code" ? "; earlier codes of this account no longer work" : ""}): ${r.value.code}`);
      console.log(`enroll a device with:\n  switchboard device enroll --user ${account} --code ${r.value.code}${enrollFlags(cfg, flags)}`);
    }
  } finally {
    store.close();
  }
  return 0;
}

const SUMMARY = {
  "user add": "create an account; prints a one-time enrollment code",
  "user code": "print a new enrollment code for an existing account (earlier codes stop working)",
};

/** `user add NAME` or `user code NAME` (they differ in what they ask the store for). */
export function userCommand(name: "user add" | "user code"): Command {
  return defineCommand({
    name,
    section: "accounts",
    synopsis: `${name} NAME`,
    summary: SUMMARY[name],
    usage: `switchboard ${name} NAME [--json] [--data-dir DIR | --config FILE]`,
    flags: [...CONFIG_FLAGS, "--json"],
    args: [1, 1],
    run: ({ flags, rest, json }) => issueCode(name, rest[0]!, flags, json),
  });
}

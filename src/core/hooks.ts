/**
 * Dispatch tables built from module registrations. A crashing handler is
 * logged with its module's name and the chain goes on (ejabberd's
 * safe_apply). Sorted handler arrays are rebuilt only when modules change.
 */
import type { ContactCheck, HookArgs, HookName, IqReply, Module, Registration } from "./module.ts";
import { ErrorCode } from "../protocol/errors.ts";
import { log } from "./log.ts";
import { COMMIT_RETRY_MS, storageCause } from "../store/errors.ts";
import { echoableId } from "../protocol/stanzas.ts";
import type { Conn } from "../transport/connection.ts";
import { factsChanged } from "./facts.ts";

type AnyHandler = (...args: any[]) => any;
interface Entry {
  module: string;
  priority: number;
  fn: AnyHandler;
}

export class Hooks {
  private stanza = new Map<string, Entry>();
  private iq = new Map<string, Entry>();
  private hooks = new Map<string, Entry[]>();
  private byModule = new Map<string, Registration[]>();

  /** Adds a module's registrations; throws (misuse) if a stanza kind or iq op is already taken. */
  add(mod: Module, regs: Registration[]): void {
    if (this.byModule.has(mod.name)) throw new Error(`hooks: module ${mod.name} is already registered; remove it before adding it again`);
    for (const r of regs) {
      if ("stanza" in r && this.stanza.has(r.stanza)) throw new Error(`hooks: stanza ${r.stanza} is already handled by ${this.stanza.get(r.stanza)!.module}`);
      if ("iq" in r && this.iq.has(r.iq)) throw new Error(`hooks: iq ${r.iq} is already handled by ${this.iq.get(r.iq)!.module}`);
    }
    for (const r of regs) {
      const e: Entry = { module: mod.name, priority: "priority" in r && r.priority !== undefined ? r.priority : 0, fn: r.handle as AnyHandler };
      if ("stanza" in r) this.stanza.set(r.stanza, e);
      else if ("iq" in r) this.iq.set(r.iq, e);
      else {
        const list = [...(this.hooks.get(r.hook) ?? []), e];
        list.sort((a, b) => b.priority - a.priority); // higher first, as in Prosody
        this.hooks.set(r.hook, list);
      }
    }
    this.byModule.set(mod.name, regs);
    factsChanged(); // a rule loaded or reloaded: no answer of the old one is kept on a connection (src/core/facts.ts)
  }

  /** Removes everything a module registered. */
  remove(name: string): void {
    const regs = this.byModule.get(name);
    if (!regs) return;
    for (const [k, e] of this.stanza) if (e.module === name) this.stanza.delete(k);
    for (const [k, e] of this.iq) if (e.module === name) this.iq.delete(k);
    for (const [k, list] of this.hooks) {
      const rest = list.filter((e) => e.module !== name);
      if (rest.length) this.hooks.set(k, rest);
      else this.hooks.delete(k);
    }
    this.byModule.delete(name);
    factsChanged();
  }

  /** Returns false when no module handles the kind. */
  dispatchStanza(kind: string, ...args: unknown[]): boolean {
    const e = this.stanza.get(kind);
    if (!e) return false;
    try {
      e.fn(...args);
    } catch (err) {
      // A write the handler needed failed on the disk (a conversation's first message reserves its sequence
      // numbers in accounts.db): nothing was accepted, and the sender is told so rather than left waiting.
      const cause = storageCause(err);
      if (cause !== null) {
        const [conn, s] = args as [Conn, { id?: unknown }];
        log.error("stanza failed on the disk", { module: e.module, kind, cause, err: err as Error });
        conn.sendError(ErrorCode.STORAGE_UNAVAILABLE, `the server cannot store messages now (${cause === "disk_full" ? "its disk is full" : "I/O errors"}); nothing was accepted, try again later`, echoableId(s?.id), { cause, retry_ms: COMMIT_RETRY_MS });
        return true;
      }
      log.error("stanza handler crashed", { module: e.module, kind, err: err as Error, stack: (err as Error).stack });
    }
    return true;
  }

  async dispatchIq(op: string, ...args: unknown[]): Promise<IqReply> {
    const e = this.iq.get(op);
    if (!e) return { ok: false, e: ErrorCode.UNKNOWN_OP, m: `no handler for iq op ${JSON.stringify(op)}` };
    try {
      return await e.fn(...args);
    } catch (err) {
      // A module's file refused a write on the disk (full, I/O error): the caller can do something with that.
      const cause = storageCause(err);
      if (cause !== null) {
        log.error("iq failed on the disk", { module: e.module, op, cause, err: err as Error });
        return { ok: false, e: ErrorCode.STORAGE_UNAVAILABLE, m: `the server cannot store this now (${cause === "disk_full" ? "its disk is full" : "I/O errors"}); try again later`, x: { cause, retry_ms: COMMIT_RETRY_MS } };
      }
      log.error("iq handler crashed", { module: e.module, op, err: err as Error, stack: (err as Error).stack });
      return { ok: false, e: ErrorCode.INTERNAL, m: "internal error" };
    }
  }

  run<H extends HookName>(name: H, ...args: HookArgs[H]): void {
    const list = this.hooks.get(name);
    if (!list) return;
    for (let i = 0; i < list.length; i++) {
      const e = list[i]!;
      try {
        if (e.fn(...args) === true) return;
      } catch (err) {
        log.error("hook crashed", { module: e.module, hook: name, err: err as Error, stack: (err as Error).stack });
      }
    }
  }

  /** Asks the `contact:check` handlers; null when none refuses (or none is loaded), else the refusal. */
  check(kind: ContactCheck["kind"], from: string, to: string): ContactCheck | null {
    const c = this.verdict(kind, from, to);
    return c.refuse === undefined ? null : c;
  }

  /**
   * The `contact:check` handlers' answer, refusal or not: `refuse` unset when none refuses. `cacheable` on it says
   * whether the answer may be kept until the facts epoch moves (src/core/facts.ts): every handler that ran declared
   * it so (true for an empty chain: loading a module bumps the epoch). Returned with the answer rather than kept on
   * Hooks as "the last check's", so it cannot be read after another check; the object is the one check() made
   * anyway, so this allocates nothing more.
   */
  verdict(kind: ContactCheck["kind"], from: string, to: string): ContactCheck {
    const c: ContactCheck = { kind, from, to, cacheable: true };
    const list = this.hooks.get("contact:check");
    if (!list) return c;
    let all = true;
    for (let i = 0; i < list.length; i++) {
      const e = list[i]!;
      c.cacheable = false;
      try {
        const stop = e.fn(c) === true;
        if (!c.cacheable) all = false;
        if (stop) break;
      } catch (err) {
        all = false;
        // Fails closed: a rule that could not be asked (a bug, a store it could not read) must not let a blocked
        // sender through, so the act is refused as if barred; the sender is told to try again, not that it is blocked.
        log.error("contact:check handler crashed; refusing", { module: e.module, kind, err: err as Error, stack: (err as Error).stack });
        c.refuse = "failed";
        c.m = `the server could not check whether ${to} accepts this from you (internal error); nothing was accepted, try again later`;
        break;
      }
    }
    c.cacheable = all;
    return c;
  }

  modules(): string[] {
    return [...this.byModule.keys()];
  }
}

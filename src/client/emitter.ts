/**
 * A small typed event emitter for the SDK's classes: listeners run
 * synchronously, in the order they were added, so a handler has run before
 * the SDK acknowledges what it handled.
 */
export class TypedEmitter<E extends { [K in keyof E]: unknown[] }> {
  private listeners: { [K in keyof E]?: ((...args: E[K]) => void)[] } = {};

  on<K extends keyof E>(event: K, fn: (...args: E[K]) => void): this {
    (this.listeners[event] ??= []).push(fn);
    return this;
  }

  off<K extends keyof E>(event: K, fn: (...args: E[K]) => void): this {
    const l = this.listeners[event];
    if (l) this.listeners[event] = l.filter((f) => f !== fn);
    return this;
  }

  protected emit<K extends keyof E>(event: K, ...args: E[K]): void {
    const l = this.listeners[event];
    if (l) for (const fn of l) fn(...args);
  }
}

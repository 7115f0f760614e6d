/** The few DOM helpers the web client needs (no framework: two panes and a form do not earn one). */

type Attrs = Record<string, string | number | boolean | ((ev: Event) => void) | undefined>;

/** An element with attributes (`on…` are listeners, `class`, `id`, `data-*`, …) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Node | string | null | undefined | false)[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" && "value" in el) (el as HTMLInputElement).value = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

/** The status line at the top: what is happening, or what went wrong (red). */
export function status(text: string, error = false): void {
  const s = byId("status");
  s.textContent = text;
  s.className = error ? "status error" : "status";
}

export const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

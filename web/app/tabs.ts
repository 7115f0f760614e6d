/**
 * One tab per device. Two tabs of one origin share the device's IndexedDB, so
 * two SecureClients would each advance the same ratchets from their own copy
 * in memory and overwrite each other's state: message keys reused, sessions
 * that no longer decrypt. A Web Lock per device keeps it to one tab: a second
 * tab waits for the user to say "use it here", which takes the lock (steal)
 * and makes the first tab stop for good before it writes anything more.
 */
import { h, status } from "./dom.ts";

const STEAL = "switchboard-steal";

/**
 * Resolves once this tab holds the device's lock: at once when no other tab has it, else after the user chose
 * to use it here (which reloads the page, so that everything is read again from IndexedDB, and steals the lock).
 * `lost` is called if another tab takes it later.
 *
 * `ifAvailable` on load after a reload: the old document's locks go with it (the Web Locks API releases a
 * document's locks and requests when it is unloaded, whatever its callback's promise is doing), and unloading it
 * comes before the new document's scripts run, so the old page cannot hold the lock over into its reload. Checked
 * in Chromium 156 (2026-12-03, a scratch page with this request): 280 reloads, by tab.reload and location.reload,
 * also with a 300 ms busy loop in the old page's pagehide or unload handler and a load average of 13, never found
 * the lock taken. A wait for the lock here would only delay the message of a real second tab.
 */
export async function holdDevice(account: string, device: number, lost: () => void): Promise<void> {
  const name = `switchboard-device-${account}-${device}`;
  const steal = sessionStorage.getItem(STEAL) === name;
  sessionStorage.removeItem(STEAL);
  const got = Promise.withResolvers<boolean>();
  navigator.locks
    .request(name, steal ? { steal: true } : { ifAvailable: true }, (lock) => {
      got.resolve(lock !== null);
      return lock ? new Promise<void>(() => {}) : undefined; // held until the page goes, or it is stolen
    })
    .catch(() => lost()); // stolen: the request's promise rejects (AbortError)
  if (await got.promise) return;
  status(`${account}'s device ${device} is open in another tab or window of this browser.`);
  const s = document.getElementById("status")!;
  s.append(" ", h("button", { id: "use-here", type: "button", onclick: () => (sessionStorage.setItem(STEAL, name), location.reload()) }, "Use it here"));
  return new Promise(() => {}); // the button reloads the page
}

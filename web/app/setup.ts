/**
 * Making this browser a device of an account, once: enroll with a one-time
 * code from `switchboard user add`, or link to an account that has a device
 * already, which approves this one (`switchboard device link --approve
 * CODE` on it, as for a CLI device). The Ed25519 key is made by WebCrypto
 * here and never leaves the page; its key file is kept in IndexedDB.
 */
import { enrollDevice, generateWebDeviceKey, linkDevice, webKeyFile, type KeyFile, type StateStorage } from "../../src/client/browser.ts";
import { byId, errorText, h, status } from "./dom.ts";

export const KEY = "device.key";

const te = new TextEncoder();
const td = new TextDecoder();

export async function loadKey(store: StateStorage): Promise<KeyFile | null> {
  const b = await store.load(KEY);
  return b ? (JSON.parse(td.decode(b)) as KeyFile) : null;
}

/** Shows the enroll / link form; resolves with the new device's key file once it is saved. */
export function setup(root: HTMLElement, url: string, store: StateStorage): Promise<KeyFile> {
  return new Promise((done) => {
    const account = h("input", { id: "account", autocomplete: "username", placeholder: "alice" });
    const code = h("input", { id: "code", autocomplete: "off", placeholder: "from `switchboard user add`" });
    const name = h("input", { id: "device-name", value: "web" });
    const linkBox = h("div", { id: "link-box" });
    const buttons: HTMLButtonElement[] = [];
    const busy = (on: boolean) => buttons.forEach((b) => (b.disabled = on));
    const keep = async (kf: KeyFile) => {
      await store.save(KEY, te.encode(JSON.stringify(kf)));
      done(kf);
    };
    const enroll = h("button", {
      id: "enroll", type: "button",
      onclick: async () => {
        if (!account.value || !code.value) return status("give the account and its enrollment code", true);
        busy(true);
        status(`enrolling ${account.value}…`);
        try {
          const key = await generateWebDeviceKey();
          const r = await enrollDevice({ url, host: "", port: 0, account: account.value.trim(), code: code.value.trim(), key, name: name.value || "web" });
          await keep(webKeyFile(key, r.account, r.device));
        } catch (e) {
          status(`enrollment failed: ${errorText(e)}`, true);
          busy(false);
        }
      },
    }, "Enroll with code");
    const link = h("button", {
      id: "link", type: "button",
      onclick: async () => {
        if (!account.value) return status("give the account to link to", true);
        busy(true);
        status(`asking ${account.value}'s devices to approve this one…`);
        try {
          const key = await generateWebDeviceKey();
          const r = await linkDevice({
            url, host: "", port: 0, account: account.value.trim(), key, name: name.value || "web",
            onCode: (c: string) => {
              linkBox.replaceChildren(
                h("p", {}, "On a device of this account, approve this one:"),
                h("p", { id: "link-code", class: "code" }, c),
                h("p", {}, h("code", {}, `switchboard device link --approve ${c}`)),
              );
            },
          });
          await keep(webKeyFile(key, r.account, r.device));
        } catch (e) {
          status(`linking failed: ${errorText(e)}`, true);
          linkBox.replaceChildren();
          busy(false);
        }
      },
    }, "Link to an existing device");
    buttons.push(enroll, link);
    root.replaceChildren(
      h("div", { class: "setup", id: "setup" },
        h("h1", {}, "Make this browser a device"),
        h("label", { for: "account" }, "Account"), account,
        h("label", { for: "device-name" }, "Device name"), name,
        h("label", { for: "code" }, "Enrollment code (enroll only)"), code,
        h("div", { class: "row" }, enroll, link),
        linkBox,
      ),
    );
    status("not a device yet: enroll with a code, or link to a device you have");
    byId("account").focus();
  });
}

/**
 * This account's linked devices (the `devices` iq: with their names, which
 * only the account itself sees) and revoking one (`device.revoke`, PROTOCOL.md
 * §5.3): the revoked device's connection is closed with `revoked` and its key
 * refused from then on, so it is logged out for good. The list is read when
 * the panel opens and again at every `device` event (linked, revoked), from
 * whichever device of the account made the change.
 */
import type { SwitchboardClient } from "../../src/client/browser.ts";
import { errorText, h, status } from "./dom.ts";
import type { Device, People } from "./people.ts";

export class DevicesPanel {
  open = false;

  constructor(
    private readonly client: SwitchboardClient,
    private readonly people: People,
    private readonly render: () => void,
  ) {
    client.on("device", () => {
      if (this.open) void this.load();
    });
  }

  toggle(): void {
    this.open = !this.open;
    if (this.open) void this.load();
    this.render();
  }

  async load(): Promise<void> {
    try {
      const r = await this.client.request<{ devices: Device[] }>("devices");
      this.people.devices = r.devices;
    } catch (e) {
      status(`the device list could not be read: ${errorText(e)}`, true);
    }
    this.render();
  }

  private async revoke(d: number): Promise<void> {
    // A revoke cannot be undone (the device must be linked again, with a new key): asked once more.
    if (!confirm(`Revoke device ${d}? It is logged out at once and cannot sign in again.`)) return;
    try {
      await this.client.request("device.revoke", { d });
      status(`device ${d} was revoked`);
    } catch (e) {
      status(`device ${d} was not revoked: ${errorText(e)}`, true);
    }
    await this.load();
  }

  /** The panel (under the account's name in the chat list), or null while closed. */
  view(stopped: boolean): HTMLElement | null {
    if (!this.open) return null;
    const rows = this.people.deviceRows(this.client.device, Date.now());
    return h("section", { id: "devices", class: "devices" },
      h("ul", {}, ...rows.map((r) =>
        h("li", { "data-device": r.d, class: r.mine ? "mine" : "" },
          h("span", { class: "label" }, r.label, r.e2e ? null : h("span", { class: "badge" }, "no end-to-end keys")),
          r.mine ? null : h("button", { type: "button", "data-revoke": r.d, disabled: stopped, onclick: () => void this.revoke(r.d) }, "Revoke"),
        ))),
    );
  }
}

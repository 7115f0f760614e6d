/**
 * Who sees this account's online state and last seen (`privacy.get`,
 * `privacy.set`, PROTOCOL.md §6.10): everyone, contacts or nobody, each on
 * its own. The setting is the account's, kept by the server, so it is read
 * when the panel opens rather than remembered here. Visibility is mutual,
 * which the panel says: whoever hides a field from someone does not see it
 * of them either.
 */
import type { PrivacyPolicy, Privacy } from "../../src/client/presence.ts";
import type { SwitchboardClient } from "../../src/client/browser.ts";
import { errorText, h, status } from "./dom.ts";

const POLICIES: PrivacyPolicy[] = ["everyone", "contacts", "nobody"];
const LABEL: Record<PrivacyPolicy, string> = { everyone: "Everyone", contacts: "My contacts", nobody: "Nobody" };

export class PrivacyPanel {
  open = false;
  private now: Privacy | null = null;

  constructor(
    private readonly client: SwitchboardClient,
    private readonly render: () => void,
    /** The rules changed: what we may see of the open chat's peer may have too (PeerControls.follow). */
    private readonly changed: () => void,
  ) {}

  toggle(): void {
    this.open = !this.open;
    if (this.open) void this.load();
    this.render();
  }

  private async load(): Promise<void> {
    try {
      this.now = await this.client.privacy();
    } catch (e) {
      status(`the privacy settings could not be read: ${errorText(e)}`, true);
    }
    this.render();
  }

  private async set(field: keyof Privacy, policy: PrivacyPolicy): Promise<void> {
    try {
      this.now = await this.client.setPrivacy({ [field]: policy });
      status(`${field === "ls" ? "last seen" : "online"}: ${LABEL[policy].toLowerCase()}`);
    } catch (e) {
      status(`the privacy setting was not changed: ${errorText(e)}`, true);
    }
    this.changed();
    this.render();
  }

  view(stopped: boolean): HTMLElement | null {
    if (!this.open) return null;
    if (!this.now) return h("section", { id: "privacy", class: "privacy" }, "…");
    const choice = (field: keyof Privacy, label: string) =>
      h("label", {}, label,
        h("select", { id: `privacy-${field}`, disabled: stopped, onchange: (ev: Event) => void this.set(field, (ev.target as HTMLSelectElement).value as PrivacyPolicy) },
          ...POLICIES.map((p) => h("option", { value: p, selected: this.now![field] === p }, LABEL[p]))));
    return h("section", { id: "privacy", class: "privacy" },
      choice("online", "Who sees when I am online"),
      choice("ls", "Who sees my last seen"),
      h("p", {}, "Both ways: whom you hide yours from, you do not see theirs either."),
    );
  }
}

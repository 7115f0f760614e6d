/**
 * The web client's presence, blocking and device list (web/app/peer.ts,
 * people.ts, devices.ts) in headless Chromium against a real server: the page
 * adds the peer as a contact (presence is mutual and for contacts by the
 * server's default, PROTOCOL.md §6.10) and shows the SDK peer online, typing,
 * hidden and refused while blocked (§6.11), back after the unblock, last
 * seen once it disconnects, and hidden and refused when the peer blocks;
 * the page's privacy setting hiding the online state both ways (mutual); the device list shows the browser's device and
 * another linked one, and revoking that one logs it out. Every wait is for a
 * state of the page or of the SDK device, never a sleep. The server runs with
 * no presence grace and no coalescing, so the last seen comes as soon as the
 * peer's connection is gone instead of 15 s later; nothing here depends on it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { ServerError } from "../../src/client/types.ts";
import type { CloseInfo } from "../../src/client/client.ts";
import { launchChromium } from "../helpers/chromium.ts";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { markBecomes, sendFromPage, shows, statusSays, textBecomes, webApp } from "../helpers/web-app.ts";

const ARTEFACTS = join(ROOT, "test-artefacts");

let srv: TestServer;
let browser: Browser;
let kit: ReturnType<typeof webApp>;

beforeAll(async () => {
  browser = await launchChromium();
  srv = await startServer({ args: ["--presence-grace-ms", "0", "--presence-coalesce-ms", "0"] });
  kit = webApp(srv, browser);
});
afterAll(async () => {
  await browser?.close();
  srv?.cleanup();
});

/** The system lines (the page's own, not messages) of the open chat. */
const systemLines = (tab: import("playwright-core").Page) =>
  tab.evaluate(() => [...(globalThis as any).document.querySelectorAll("#messages li.system")].map((x: any) => x.textContent as string));

test("presence in a 1:1 chat: online once both are contacts, typing, hidden and refused while blocked, back after the unblock, last seen after the peer disconnects, hidden and refused when the peer blocks", async () => {
  const b = await kit.linkedBrowser("pplann");
  const bob = await kit.secureDevice("pplbob");
  const { tab, logs } = b;
  try {
    await bob.c.addContacts(["pplann"]); // bob's half of the mutual rule; the page adds its half below
    await bob.c.setPresence("active");
    await tab.fill("#peer", "pplbob");
    await tab.click("#start-chat");
    await textBecomes(tab, logs, "#presence", ""); // not a contact of ann's yet: ann's policy (contacts) hides bob from her
    await tab.click("#contact-button");
    await textBecomes(tab, logs, "#contact-button", "Remove contact");
    await textBecomes(tab, logs, "#presence", "online");
    // Bob watches ann: the page's device is in use while visible (presence.state active), so she is online to him.
    expect((await bob.c.watch(["pplann"]))[0]).toEqual({ account: "pplann", online: true });

    bob.c.typing("pplann", "typing");
    await textBecomes(tab, logs, "#typing", "typing…");
    bob.c.typing("pplann", "paused");
    await textBecomes(tab, logs, "#typing", "");
    await tab.screenshot({ path: join(ARTEFACTS, "app-presence-online.png") });

    // Block: presence hidden both ways, messages refused both ways, and the page says why.
    await tab.click("#block-button");
    await tab.waitForSelector("#blocked", { timeout: 20_000 });
    expect(await tab.textContent("#blocked")).toContain("You blocked pplbob");
    await textBecomes(tab, logs, "#presence", "");
    await textBecomes(tab, logs, "#block-button", "Unblock");
    await waitFor(() => bob.events.presence!.some((v) => v.account === "pplann" && v.ended === "privacy"), "bob's watch of ann ends (privacy)");
    const refused = await bob.s.send("pplann", "are you there?").then(() => null, (e) => e);
    expect(refused).toBeInstanceOf(ServerError);
    expect((refused as ServerError).code).toBe("blocked");
    await sendFromPage(tab, "from behind a block");
    await markBecomes(tab, logs, "from behind a block", "failed");
    await waitFor(async () => (await systemLines(tab)).includes("not sent: you blocked pplbob; unblock them to write to them"), "the page says why its message was not sent");
    expect(await systemLines(tab)).toContain("you blocked pplbob");
    expect(await bob.c.presenceOf("pplann")).toEqual({ account: "pplann" }); // hidden from him too
    await tab.screenshot({ path: join(ARTEFACTS, "app-presence-blocked.png") });

    // Unblock: presence and messages come back.
    await tab.click("#unblock-button");
    await textBecomes(tab, logs, "#block-button", "Block");
    expect(await tab.$("#blocked")).toBeNull();
    await textBecomes(tab, logs, "#presence", "online");
    await bob.s.send("pplann", "after the unblock");
    await shows(tab, logs, "after the unblock");
    await sendFromPage(tab, "welcome back");
    await waitFor(() => bob.events.message!.some((m) => m.text === "welcome back"), "bob gets the page's message after the unblock");
    expect(bob.events.message!.map((m) => m.text)).not.toContain("from behind a block");
    expect(await systemLines(tab)).toContain("you unblocked pplbob");

    // Bob's only device disconnects: offline at once (no grace here), last seen of this minute.
    await bob.c.close();
    await textBecomes(tab, logs, "#presence", /^last seen (today|yesterday) at \d\d:\d\d$/);
    await tab.screenshot({ path: join(ARTEFACTS, "app-presence-last-seen.png") });

    // Now bob blocks ann (from a connection of his device that does not say it is in use): the page's watch ends,
    // and its message is refused with the other side's words.
    const bobAgain = await srv.client(bob.kf);
    try {
      await bobAgain.block("pplann");
      await textBecomes(tab, logs, "#presence", "");
      await sendFromPage(tab, "still there?");
      await markBecomes(tab, logs, "still there?", "failed");
      await waitFor(async () => (await systemLines(tab)).includes("not sent: pplbob does not accept messages from you"), "the page says the peer does not accept its messages");
      expect(await tab.$("#blocked")).toBeNull(); // it is bob's block, not ann's: nothing to unblock here
    } finally {
      await bobAgain.close();
    }
  } finally {
    await bob.c.close();
    await b.close();
  }
});

test("the device list shows this browser's device and the other linked one; revoking the other logs it out, and a device revoked elsewhere is told so", async () => {
  const b = await kit.linkedBrowser("pplcat"); // device 1 ("test", the CLI's key) approved device 2, this browser
  const { tab, logs } = b;
  tab.on("dialog", (d) => void d.accept()); // the page asks before revoking
  const first = await srv.client(b.first);
  const closes: CloseInfo[] = [];
  first.on("close", (c) => closes.push(c));
  try {
    await tab.click("#devices-button");
    await textBecomes(tab, logs, '#devices li[data-device="2"] .label', /^web · device 2 · linked (today|yesterday) at \d\d:\d\d · this browser/);
    await textBecomes(tab, logs, '#devices li[data-device="1"] .label', /^test · device 1 · linked (today|yesterday) at \d\d:\d\d/);
    expect(await tab.$('#devices button[data-revoke="2"]')).toBeNull(); // not this browser's own
    await tab.screenshot({ path: join(ARTEFACTS, "app-devices.png") });

    await tab.click('#devices button[data-revoke="1"]');
    await waitFor(() => closes.some((c) => c.reason === "revoked" && !c.willReconnect), "device 1 is closed with revoked");
    await statusSays(tab, logs, "device 1 was revoked");
    await tab.waitForSelector('#devices li[data-device="1"]', { state: "detached", timeout: 20_000 });
    expect(await tab.$$eval("#devices li", (xs) => xs.map((x) => x.getAttribute("data-device")))).toEqual(["2"]);
    const again = await srv.client(b.first, { reconnect: false }).then(() => "signed in", (e) => String(e));
    expect(again).not.toBe("signed in");

    // A third device (enrolled by code) revokes the browser's: the page says it is signed out for good.
    const third = await srv.client(await srv.newDevice("pplcat", "phone"));
    try {
      await textBecomes(tab, logs, '#devices li[data-device="3"] .label', /^phone · device 3 /); // the device event refreshed the list
      await third.request("device.revoke", { d: 2 });
      await statusSays(tab, logs, "this device (pplcat · device 2) was revoked: it is signed out for good");
    } finally {
      await third.close();
    }
  } finally {
    await first.close();
    await b.close();
  }
});

test("privacy from the page: online hidden from everyone hides ours from the peer and theirs from us (mutual); the setting is the server's (after a reload); back to contacts shows both again", async () => {
  const b = await kit.linkedBrowser("pplpat");
  const quin = await kit.secureDevice("pplquin");
  const { tab, logs } = b;
  try {
    await quin.c.addContacts(["pplpat"]);
    await quin.c.setPresence("active");
    await tab.fill("#peer", "pplquin");
    await tab.click("#start-chat");
    await tab.click("#contact-button");
    await textBecomes(tab, logs, "#presence", "online");
    expect((await quin.c.presenceOf("pplpat")).online).toBe(true);

    await tab.click("#privacy-button");
    await tab.waitForSelector("#privacy-online", { timeout: 20_000 });
    expect([await tab.inputValue("#privacy-online"), await tab.inputValue("#privacy-ls")]).toEqual(["contacts", "contacts"]); // the server's default
    await tab.selectOption("#privacy-online", "nobody");
    await statusSays(tab, logs, "online: nobody");
    await textBecomes(tab, logs, "#presence", ""); // quin's online is hidden from whoever hides their own
    expect((await quin.c.presenceOf("pplpat")).online).toBeUndefined();
    await tab.screenshot({ path: join(ARTEFACTS, "app-privacy.png") });

    await tab.reload();
    await statusSays(tab, logs, "signed in as pplpat · device 2 · end-to-end encrypted");
    await tab.fill("#peer", "pplquin"); // an empty chat is not kept in the history: opened again
    await tab.click("#start-chat");
    await tab.click("#privacy-button");
    await tab.waitForSelector("#privacy-online", { timeout: 20_000 });
    expect([await tab.inputValue("#privacy-online"), await tab.inputValue("#privacy-ls")]).toEqual(["nobody", "contacts"]);
    await tab.selectOption("#privacy-online", "contacts");
    await statusSays(tab, logs, "online: my contacts");
    await textBecomes(tab, logs, "#presence", "online");
    expect((await quin.c.presenceOf("pplpat")).online).toBe(true);
  } finally {
    await quin.c.close();
    await b.close();
  }
});

// Browser tests of the sign pages: the sign list at /, one sign at /signs/{id}
// (canvas, drag and drop, playlist) and the message library at /messages.
import { execFile } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import { type Locator, type Page } from "@playwright/test";
import { test, expect, ADMIN, uid } from "./fixtures";
import {
  expectShowing,
  getRecord,
  libraryItem,
  message,
  openSign,
  playlistOrder,
  put,
} from "./records";

const run = promisify(execFile);

// Tall enough that a drag's source and target are both on screen: Playwright
// scrolls a target into view after pressing the mouse on the source, and the
// drag would then start on whatever moved under the pointer.
test.use({ viewport: { width: 1400, height: 1800 } });
const screens = path.join(__dirname, "..", "test-results", "screens");

/** A retained QoS 1 publish by an outside MQTT client (Debian's mosquitto_pub), as the admin. */
async function mqttPublish(topic: string, payload: string): Promise<void> {
  const address = process.env.MARQUEE_MQTT || "127.0.0.1:1883";
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon);
  const port = address.slice(colon + 1);
  await run("mosquitto_pub", [
    ...["-h", host, "-p", port, "-u", ADMIN.username, "-P", ADMIN.password],
    ...["-t", topic, "-r", "-q", "1", "-m", payload],
  ]);
}

/** Drops at the bottom edge of the playlist, below its items: an append. */
async function dropIntoPlaylist(page: Page, source: Locator): Promise<void> {
  const zone = page.getByTestId("playlist");
  const box = await zone.boundingBox();
  expect(box).not.toBeNull();
  await source.dragTo(zone, { targetPosition: { x: 24, y: box!.height - 6 } });
}

test("a message written in the library shows on the sign it is dropped onto", async ({
  page,
  request,
}) => {
  const signId = `lobby_${uid()}`;
  await put(request, "signs", signId, { name: "Lobby" });
  const text = `HI ${uid().slice(-4)}`;

  await page.goto("/messages");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await page.getByTestId("message-new").click();
  await page.getByTestId("message-text").fill(text);
  await page.getByTestId("message-duration").fill("3600");
  await expect(page.getByTestId("message-preview")).toHaveAttribute("data-lit", /^[1-9]\d*$/);
  await page.getByTestId("message-save").click();
  const item = page.getByTestId("message-item").filter({ hasText: text });
  await expect(item).toHaveCount(1);
  const messageId = (await item.getAttribute("data-id"))!;
  expect(messageId).toBeTruthy();
  const stored = await getRecord(request, "messages", messageId);
  expect(stored.text).toBe(text);
  expect(stored.duration).toBe(3600);

  const canvas = await openSign(page, signId);
  await expect(canvas).toHaveAttribute("data-message", "");
  await libraryItem(page, messageId).dragTo(page.getByTestId("stage"));
  await expectShowing(canvas, messageId);
  await expect(page.getByTestId("mode")).toHaveAttribute("data-mode", "message");
  expect((await getRecord(request, "signs", signId)).shows).toEqual({ message: messageId });
  await page.screenshot({ path: path.join(screens, "sign.png"), fullPage: true });
});

test("the playlist takes dragged messages, reorders by drag and keeps its order", async ({
  page,
  request,
}) => {
  const id = uid();
  const signId = `hall_${id}`;
  const [a, b, c] = ["a", "b", "c"].map((n) => `m_${id}_${n}`);
  for (const [m, text] of [
    [a, "ONE"],
    [b, "TWO"],
    [c, "THREE"],
  ]) {
    await put(request, "messages", m, message(text));
  }
  await put(request, "signs", signId, { name: "Hall" });

  const canvas = await openSign(page, signId);
  for (const [i, m] of [a, b, c].entries()) {
    await dropIntoPlaylist(page, libraryItem(page, m));
    await expect(page.getByTestId("playlist-item")).toHaveCount(i + 1);
  }
  expect(await playlistOrder(page)).toEqual([a, b, c]);
  await expect(page.getByTestId("mode")).toHaveAttribute("data-mode", "playlist");
  await expectShowing(canvas, a);

  // Drag the last item onto the first: it goes before it.
  const items = page.getByTestId("playlist-item");
  await items.nth(2).dragTo(items.nth(0));
  await expect.poll(() => playlistOrder(page)).toEqual([c, a, b]);
  // The item that was playing stays current.
  await expect(page.locator('[data-testid="playlist-item"].current')).toHaveAttribute("data-message", a);

  await page.reload();
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await expect(page.getByTestId("playlist-item")).toHaveCount(3);
  expect(await playlistOrder(page)).toEqual([c, a, b]);
  const stored = await getRecord(request, "signs", signId);
  expect(stored.shows.playlist.map((item: { message: string }) => item.message)).toEqual([c, a, b]);

  // Without a mouse: the buttons do the same.
  await page.getByTestId("playlist-item").nth(2).getByRole("button", { name: "Move up" }).click();
  await expect.poll(() => playlistOrder(page)).toEqual([c, b, a]);
  // Dragged out onto the trash: removed.
  await page.getByTestId("playlist-item").nth(0).dragTo(page.getByTestId("trash"));
  await expect.poll(() => playlistOrder(page)).toEqual([b, a]);
  // Dragged back onto the library: removed as well.
  await page.getByTestId("playlist-item").nth(0).dragTo(page.getByTestId("library"));
  await expect.poll(() => playlistOrder(page)).toEqual([a]);
  await libraryItem(page, c).getByTestId("add-to-playlist").click();
  await expect.poll(() => playlistOrder(page)).toEqual([a, c]);

  // An item's own duration: typed seconds are stored; empty falls back to the message's.
  const seconds = page.getByTestId("playlist-duration");
  await expect(seconds.nth(1)).toHaveAttribute("placeholder", "3600");
  await seconds.nth(1).fill("7");
  await seconds.nth(1).press("Tab");
  await expect
    .poll(async () => (await getRecord(request, "signs", signId)).shows.playlist[1].duration)
    .toBe(7);
  await seconds.nth(0).fill("0");
  await seconds.nth(0).press("Tab");
  await expect(
    page.getByTestId("playlist-item").nth(0).locator('[data-testid="error"][data-for="seconds"]'),
  ).toContainText("Seconds");
  const after = await getRecord(request, "signs", signId);
  expect(after.shows.playlist.map((item: { duration?: number }) => item.duration ?? null)).toEqual([null, 7]);
});

test("a second page follows the sign live, and so does an MQTT publish", async ({
  page,
  context,
  request,
}) => {
  const id = uid();
  const signId = `door_${id}`;
  const [first, second, third] = ["1", "2", "3"].map((n) => `m_${id}_${n}`);
  await put(request, "messages", first, message("OPEN"));
  await put(request, "messages", second, message("CLOSED"));
  await put(request, "messages", third, message("BACK SOON"));
  await put(request, "signs", signId, { name: "Door", shows: { message: first } });

  const watcher = await openSign(page, signId);
  await expectShowing(watcher, first);

  const other = await context.newPage();
  const otherCanvas = await openSign(other, signId);
  await expectShowing(otherCanvas, first);
  await libraryItem(other, second).getByTestId("show-now").click();
  await expectShowing(otherCanvas, second);
  // The first page changes without a reload.
  await expectShowing(watcher, second);
  await other.close();

  // A device-side tool publishes the whole sign over MQTT: a retained publish is a write.
  const litBefore = await watcher.getAttribute("data-lit");
  await mqttPublish(
    `signs/${signId}`,
    JSON.stringify({ name: "Door", width: 64, height: 16, shows: { message: third } }),
  );
  await expectShowing(watcher, third);
  expect(await watcher.getAttribute("data-lit")).not.toBe(litBefore);
  expect((await getRecord(request, "signs", signId)).shows).toEqual({ message: third });
});

test("malformed input shows an error next to its form and changes nothing", async ({
  page,
  request,
}) => {
  const id = uid();
  await page.goto("/");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const before = (await (await request.get("/api/signs/?limit=1000")).json()).items.length;
  const form = page.getByTestId("new-sign");
  await form.getByTestId("sign-name-input").fill(`Too wide ${id}`);
  await form.getByTestId("sign-width-input").fill("9999");
  await form.getByTestId("sign-create").click();
  const error = form.locator('[data-testid="error"][data-for="width"]');
  await expect(error).toContainText("width");
  await expect(error).toContainText("256");
  await expect(page.getByTestId("sign-card").filter({ hasText: `Too wide ${id}` })).toHaveCount(0);
  const after = (await (await request.get("/api/signs/?limit=1000")).json()).items.length;
  expect(after).toBe(before);

  // A message with an impossible speed is not saved either.
  const messageId = `m_${id}`;
  await put(request, "messages", messageId, message("STEADY"));
  await page.goto(`/messages?id=${messageId}`);
  await expect(page.getByTestId("message-text")).toHaveValue("STEADY");
  await page.getByTestId("message-text").fill("CHANGED");
  await page.getByTestId("message-speed").fill("0");
  await page.getByTestId("message-save").click();
  await expect(page.locator('[data-testid="error"][data-for="speed"]')).toContainText("speed");
  expect((await getRecord(request, "messages", messageId)).text).toBe("STEADY");
});

test("the sign list creates, renames, resizes and deletes signs with live thumbnails", async ({
  page,
  request,
}) => {
  const id = uid();
  const name = `Cafe ${id}`;
  await put(request, "messages", `m_${id}`, message("COFFEE"));
  await page.goto("/");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await expect(page.getByRole("link", { name: "Data", exact: true })).toBeVisible();

  const form = page.getByTestId("new-sign");
  await form.getByTestId("sign-name-input").fill(name);
  await form.getByTestId("sign-width-input").fill("48");
  await form.getByTestId("sign-height-input").fill("12");
  await form.getByTestId("sign-create").click();
  const card = page.getByTestId("sign-card").filter({ hasText: name });
  await expect(card).toHaveCount(1);
  await expect(card.getByTestId("sign-size")).toHaveText("48×12");
  const signId = (await card.getAttribute("data-id"))!;
  const stored = await getRecord(request, "signs", signId);
  expect([stored.name, stored.width, stored.height]).toEqual([name, 48, 12]);

  // The thumbnail follows what the sign shows.
  const thumb = card.getByTestId("thumb");
  await expect(thumb).toHaveAttribute("data-width", "48");
  await request.patch(`/api/signs/${signId}`, { data: { shows: { message: `m_${id}` } } });
  await expectShowing(thumb, `m_${id}`);

  await card.getByTestId("sign-edit").click();
  await card.getByTestId("sign-name-input").fill(`${name} renamed`);
  await card.getByTestId("sign-width-input").fill("80");
  await card.getByTestId("sign-height-input").fill("20");
  await card.getByRole("button", { name: "Save" }).click();
  const renamed = page.locator(`[data-testid="sign-card"][data-id="${signId}"]`);
  await expect(renamed.getByTestId("sign-title")).toHaveText(`${name} renamed`);
  await expect(renamed.getByTestId("sign-size")).toHaveText("80×20");
  await expect(renamed.getByTestId("thumb")).toHaveAttribute("data-width", "80");
  const resized = await getRecord(request, "signs", signId);
  expect([resized.width, resized.height, resized.shows]).toEqual([80, 20, { message: `m_${id}` }]);
  await page.screenshot({ path: path.join(screens, "home.png"), fullPage: true });

  await renamed.getByTestId("sign-delete").click();
  await renamed.getByTestId("sign-delete").click();
  await expect(renamed).toHaveCount(0);
  await expect.poll(async () => (await request.get(`/api/signs/${signId}`)).status()).toBe(404);
});

// The sign app by keyboard alone: every flow reachable with Tab and Enter, the
// focus visible, and kept on the item acted on (or the next sensible control)
// after each action instead of falling back to the top of the page.
import { type Locator } from "@playwright/test";
import { test, expect, uid } from "./fixtures";
import {
  allRecords,
  cleanUpEachTest,
  expectShowing,
  libraryItem,
  message,
  playlistOrder,
  playlistRow,
  put,
  tabTo,
} from "./records";

cleanUpEachTest(test);

test.use({ viewport: { width: 1400, height: 1400 } });

/** Whether the focus ring can be seen: a solid outline at least 2 px wide. */
async function expectVisibleFocus(target: Locator): Promise<void> {
  await expect(target).toBeFocused();
  const outline = await target.evaluate((el) => {
    const style = getComputedStyle(el);
    return { style: style.outlineStyle, width: parseFloat(style.outlineWidth) };
  });
  expect(outline.style).not.toBe("none");
  expect(outline.width).toBeGreaterThanOrEqual(2);
}

test("a sign is created and filled by keyboard alone, and focus stays where the user works", async ({
  page,
  request,
}) => {
  const id = uid();
  const name = `Desk ${id}`;
  const [a, b, c] = ["a", "b", "c"].map((n) => `k_${id}_${n}`);
  for (const [m, text] of [
    [a, "ALPHA"],
    [b, "BRAVO"],
    [c, "CHARLIE"],
  ]) {
    await put(request, "messages", m, message(text));
  }

  // Home: Tab to "Create a sign", Enter, type the name, Enter, then follow the link.
  await page.goto("/");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const start = page.getByTestId("start-create");
  await tabTo(page, start);
  await expectVisibleFocus(start);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("new-sign").getByTestId("sign-name-input")).toBeFocused();
  await page.keyboard.type(name);
  await page.keyboard.press("Enter");
  const open = page.getByTestId("sign-made").getByRole("link");
  await expect(open).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("sign-name")).toHaveText(name);
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const signId = (await allRecords(request, "signs")).find(([, v]) => v.name === name)![0];

  // Add three messages: focus stays on each "Add to playlist".
  for (const [i, m] of [a, b, c].entries()) {
    const add = libraryItem(page, m).getByTestId("add-to-playlist");
    await tabTo(page, add);
    await page.keyboard.press("Enter");
    await expect(page.getByTestId("playlist-item")).toHaveCount(i + 1);
    await expect(add).toBeFocused();
  }
  expect(await playlistOrder(page)).toEqual([a, b, c]);

  // Move the last one up twice: focus travels with it.
  const upC = playlistRow(page, c).locator('[data-action="up"]');
  await tabTo(page, upC, "Shift+Tab");
  await expectVisibleFocus(upC);
  await page.keyboard.press("Enter");
  await expect.poll(() => playlistOrder(page)).toEqual([a, c, b]);
  await expect(upC).toBeFocused();
  await page.keyboard.press("Enter");
  await expect.poll(() => playlistOrder(page)).toEqual([c, a, b]);
  // At the top "Move up" is disabled: focus is on "Move down" of the same row.
  await expect(playlistRow(page, c).locator('[data-action="down"]')).toBeFocused();

  // Play another row: the focus stays on its Play.
  const playB = playlistRow(page, b).locator('[data-action="play"]');
  await tabTo(page, playB);
  await page.keyboard.press("Enter");
  await expect(playlistRow(page, b)).toHaveClass(/current/);
  await expect(playB).toBeFocused();
  await expectShowing(page.getByTestId("sign-canvas"), b);

  // Remove the first row: focus goes to the row that takes its place.
  const removeC = playlistRow(page, c).getByTestId("playlist-remove");
  await tabTo(page, removeC, "Shift+Tab");
  await page.keyboard.press("Enter");
  await expect.poll(() => playlistOrder(page)).toEqual([a, b]);
  await expect(playlistRow(page, a).getByTestId("playlist-remove")).toBeFocused();

  // Show one message now: focus stays on the button pressed.
  const showC = libraryItem(page, c).getByTestId("show-now");
  await tabTo(page, showC);
  await page.keyboard.press("Enter");
  await expectShowing(page.getByTestId("sign-canvas"), c);
  await expect(showC).toBeFocused();
  expect((await (await request.get(`/api/signs/${signId}`)).json()).shows).toEqual({ message: c });
});

test("a message is written, saved and copied by keyboard alone", async ({ page, request }) => {
  const words = `KEYS ${uid().slice(-5)}`;
  await page.goto("/messages");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const fresh = page.getByTestId("message-new");
  await tabTo(page, fresh);
  await expectVisibleFocus(fresh);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("message-text")).toBeFocused();
  await page.keyboard.press("Control+A");
  await page.keyboard.type(words);
  const save = page.getByTestId("message-save");
  await tabTo(page, save);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("message-note")).toContainText("Created");
  // Still in the editor, on the same button (now "Save").
  await expect(save).toBeFocused();
  await expect(save).toHaveText("Save");
  const id = (await page.getByTestId("message-item").filter({ hasText: words }).getAttribute("data-id"))!;
  expect((await (await request.get(`/api/messages/${id}`)).json()).text).toBe(words);

  const duplicate = page.getByTestId("message-duplicate");
  await tabTo(page, duplicate);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("message-note")).toContainText(`Duplicated as “${id}-copy”`);
  await expect(duplicate).toBeFocused();
  // Delete the copy: Enter arms the button, Enter again confirms.
  const remove = page.getByTestId("message-delete");
  await tabTo(page, remove);
  await page.keyboard.press("Enter");
  await expect(remove).toHaveText("Confirm delete");
  await page.keyboard.press("Enter");
  await expect.poll(async () => (await request.get(`/api/messages/${id}-copy`)).status()).toBe(404);
  await expect(page.getByTestId("message-note")).toHaveText("Deleted.");
  await expect(fresh).toBeFocused();
});

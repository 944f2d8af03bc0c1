// The sign page while the sign changes under it (a playing playlist changes it
// every few seconds; other tabs, REST and MQTT change it too): what the user is
// typing or dragging survives, and drops land where the marker says.
import { type Locator, type Page } from "@playwright/test";
import { test, expect, uid } from "./fixtures";
import {
  cleanUpEachTest,
  getRecord,
  libraryItem,
  message,
  openSign,
  patch,
  playlistOrder,
  put,
} from "./records";

cleanUpEachTest(test);

// Tall enough that drag sources and targets are both on screen (see signs.spec.ts).
test.use({ viewport: { width: 1400, height: 1800 } });

async function center(locator: Locator): Promise<{ x: number; y: number }> {
  const box = await locator.boundingBox();
  expect(box).not.toBeNull();
  return { x: box!.x + box!.width / 2, y: box!.y + box!.height / 2 };
}

/** Presses the mouse on `source`'s label (not on one of its buttons) and starts
 * dragging it; the drop is the caller's. */
async function startDrag(page: Page, source: Locator): Promise<void> {
  const from = await center(source.locator(".label"));
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(from.x + 10, from.y + 10, { steps: 4 });
}

/** The empty part of the playlist below its rows. */
async function belowTheRows(page: Page): Promise<{ x: number; y: number }> {
  const zone = page.getByTestId("playlist");
  const box = (await zone.boundingBox())!;
  return { x: box.x + 40, y: box.y + box.height - 8 };
}

test("a half-typed duration is neither saved nor overwritten when the sign changes", async ({
  page,
  request,
}) => {
  const id = uid();
  const [a, b] = [`a_${id}`, `b_${id}`];
  const signId = `bar_${id}`;
  await put(request, "messages", a, message("HAPPY"));
  await put(request, "messages", b, message("HOUR"));
  await put(request, "signs", signId, {
    name: "Bar",
    brightness: 80,
    shows: { playlist: [{ message: a }, { message: b }], position: 0 },
  });
  await openSign(page, signId);
  const rows = page.getByTestId("playlist-item");
  const seconds = rows.nth(0).getByTestId("playlist-duration");
  await seconds.click();
  await page.keyboard.type("1");

  // The playlist moves on and the brightness changes, as another client would.
  await patch(request, "signs", signId, { brightness: 33, shows: { position: 1 } });
  await expect(page.locator(".controls output")).toHaveText("33%");
  await expect(rows.nth(1)).toHaveClass(/current/);
  await expect(seconds).toBeFocused();
  await expect(seconds).toHaveValue("1");
  expect((await getRecord(request, "signs", signId)).shows.playlist[0].duration).toBeUndefined();

  await page.keyboard.type("5");
  await seconds.press("Tab");
  await expect
    .poll(async () => (await getRecord(request, "signs", signId)).shows.playlist[0].duration)
    .toBe(15);
  // The other row and the position were not touched by the save.
  const stored = await getRecord(request, "signs", signId);
  expect(stored.shows.position).toBe(1);
  expect(stored.shows.playlist[1].duration).toBeUndefined();
  await expect(seconds).toHaveValue("15");
});

test("a drag in progress survives a change to the sign, and the drop marker shows where it lands", async ({
  page,
  request,
}) => {
  const id = uid();
  const [a, b, c] = ["a", "b", "c"].map((n) => `m_${id}_${n}`);
  const signId = `gate_${id}`;
  for (const [m, text] of [
    [a, "ONE"],
    [b, "TWO"],
    [c, "THREE"],
  ]) {
    await put(request, "messages", m, message(text));
  }
  await put(request, "signs", signId, { name: "Gate", shows: { playlist: [{ message: a }], position: 0 } });
  await openSign(page, signId);
  await expect(page.getByTestId("playlist-item")).toHaveCount(1);

  await startDrag(page, libraryItem(page, b));
  const end = await belowTheRows(page);
  await page.mouse.move(end.x, end.y, { steps: 5 });
  // Chromium hands the page the dragover of a position at the next pointer move.
  await page.mouse.move(end.x, end.y - 1);
  await expect(page.getByTestId("drop-marker-end")).toBeVisible();
  // The sign changes mid-drag.
  await patch(request, "signs", signId, { brightness: 21 });
  await expect(page.locator(".controls output")).toHaveText("21%");
  await page.mouse.move(end.x, end.y - 2, { steps: 2 });
  await page.mouse.move(end.x, end.y - 3);
  await expect(page.getByTestId("drop-marker-end")).toBeVisible();
  await page.mouse.up();
  await expect.poll(() => playlistOrder(page)).toEqual([a, b]);
  await expect(page.getByTestId("drop-marker-end")).toBeHidden();

  // Over the upper half of a row: the marker is above it and the drop goes before it.
  const first = page.getByTestId("playlist-item").nth(0);
  await startDrag(page, libraryItem(page, c));
  const box = (await first.boundingBox())!;
  await page.mouse.move(box.x + box.width / 3, box.y + 6, { steps: 8 });
  // Chromium hands the page the dragover of a position at the next pointer move.
  await page.mouse.move(box.x + box.width / 3, box.y + 7);
  await expect(first).toHaveClass(/drop-before/);
  await page.mouse.up();
  await expect.poll(() => playlistOrder(page)).toEqual([c, a, b]);
});

test("messages dropped into the playlist one after another keep the order they were dropped in", async ({
  page,
  request,
}) => {
  const id = uid();
  const [a, b, c, d] = ["a", "b", "c", "d"].map((n) => `m_${id}_${n}`);
  const signId = `hall_${id}`;
  for (const [m, text] of [
    [a, "A"],
    [b, "B"],
    [c, "C"],
    [d, "D"],
  ]) {
    await put(request, "messages", m, message(text));
  }
  await put(request, "signs", signId, { name: "Hall" });
  await openSign(page, signId);

  // Each dropped on the playlist's empty area, as a user drops "into the list".
  for (const [i, m] of [a, b, c].entries()) {
    const end = await belowTheRows(page);
    await libraryItem(page, m).dragTo(page.getByTestId("playlist"), {
      targetPosition: await relative(page, end),
    });
    await expect(page.getByTestId("playlist-item")).toHaveCount(i + 1);
  }
  expect(await playlistOrder(page)).toEqual([a, b, c]);

  // On the lower half of a row: after it.
  const first = page.getByTestId("playlist-item").nth(0);
  const box = (await first.boundingBox())!;
  await libraryItem(page, d).dragTo(first, { targetPosition: { x: box.width / 2, y: box.height - 3 } });
  await expect.poll(() => playlistOrder(page)).toEqual([a, d, b, c]);
  const stored = await getRecord(request, "signs", signId);
  expect(stored.shows.playlist.map((item: { message: string }) => item.message)).toEqual([a, d, b, c]);
});

/** A page point as a position inside the playlist panel. */
async function relative(page: Page, point: { x: number; y: number }): Promise<{ x: number; y: number }> {
  const box = (await page.getByTestId("playlist").boundingBox())!;
  return { x: point.x - box.x, y: point.y - box.y };
}

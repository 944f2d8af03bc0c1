// What the sign app's specs share: writing and reading records as another
// client would (REST), opening a sign, and reading what a canvas lights.
import * as path from "node:path";
import { type APIRequestContext, type Locator, type Page } from "@playwright/test";
import { expect, type test as fixturesTest } from "./fixtures";

/** Where the run saves its screenshots of every page (git-ignored, not committed). */
export const SCREENSHOTS = path.join(__dirname, "..", "test-results", "screenshots");

export async function put(
  request: APIRequestContext,
  table: string,
  id: string,
  value: Record<string, unknown>,
): Promise<void> {
  const response = await request.put(`/api/${table}/${id}`, { data: value });
  expect(response.ok(), await response.text()).toBe(true);
}

export async function patch(
  request: APIRequestContext,
  table: string,
  id: string,
  value: Record<string, unknown>,
): Promise<void> {
  const response = await request.patch(`/api/${table}/${id}`, { data: value });
  expect(response.ok(), await response.text()).toBe(true);
}

export async function getRecord(request: APIRequestContext, table: string, id: string): Promise<any> {
  const response = await request.get(`/api/${table}/${id}`);
  expect(response.status(), await response.text()).toBe(200);
  return response.json();
}

/** Every record of a table, as `[id, value]`. */
export async function allRecords(request: APIRequestContext, table: string): Promise<[string, any][]> {
  const response = await request.get(`/api/${table}/?limit=1000`);
  expect(response.ok(), await response.text()).toBe(true);
  const body = await response.json();
  return body.items.map((item: any) => [item.id, item.value]);
}

/** A message that stays up for an hour, so no playlist moves on during a test. */
export function message(text: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { text, effect: "static", duration: 3600, ...extra };
}

/** Opens a sign's page once it is live; its big canvas. */
export async function openSign(page: Page, id: string): Promise<Locator> {
  await page.goto(`/signs/${id}`);
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const canvas = page.getByTestId("sign-canvas");
  await expect(canvas).toBeVisible();
  return canvas;
}

export async function expectShowing(canvas: Locator, messageId: string): Promise<void> {
  await expect(canvas).toHaveAttribute("data-message", messageId);
  await expect.poll(async () => Number(await canvas.getAttribute("data-lit"))).toBeGreaterThan(0);
}

export function playlistOrder(page: Page): Promise<string[]> {
  return page
    .getByTestId("playlist-item")
    .evaluateAll((items) => items.map((item) => item.getAttribute("data-message") ?? ""));
}

export function libraryItem(page: Page, id: string): Locator {
  return page.locator(`[data-testid="library-item"][data-message="${id}"]`);
}

export function playlistRow(page: Page, id: string): Locator {
  return page.locator(`[data-testid="playlist-item"][data-message="${id}"]`);
}

/** The colour of the brightest LED a canvas draws now, as [r, g, b]. */
export async function brightestLed(canvas: Locator): Promise<[number, number, number]> {
  return canvas.evaluate((element) => {
    const c = element as HTMLCanvasElement;
    const data = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
    let best = [0, 0, 0];
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] + data[i + 1] + data[i + 2] > best[0] + best[1] + best[2]) {
        best = [data[i], data[i + 1], data[i + 2]];
      }
    }
    return best as [number, number, number];
  });
}

/** What a lit LED's colour reads as: "red" (#ff0000 on a full-colour sign), "amber", or "other". */
export function ledHue([r, g, b]: [number, number, number]): string {
  if (r < 80) return "other";
  if (g < 0.3 * r && b < 0.3 * r) return "red";
  if (g > 0.5 * r && g < 0.85 * r && b < 0.3 * r) return "amber";
  return "other";
}

/** Presses `key` (Tab, Shift+Tab) until `target` has the focus: at most `max` presses. */
export async function tabTo(page: Page, target: Locator, key = "Tab", max = 250): Promise<void> {
  for (let i = 0; i < max; i++) {
    if (await target.evaluate((el) => el === document.activeElement)) return;
    await page.keyboard.press(key);
  }
  await expect(target).toBeFocused();
}

/** Deletes the signs and messages each test of a spec made (through the API or the
 * page), so later specs' libraries and sign lists are not filled with them. */
export function cleanUpEachTest(test: typeof fixturesTest): void {
  const before = new Map<string, Set<string>>();
  const tables = ["signs", "messages"];
  test.beforeEach(async ({ admin }) => {
    for (const table of tables) {
      before.set(table, new Set((await allRecords(admin, table)).map(([id]) => id)));
    }
  });
  test.afterEach(async ({ admin }) => {
    for (const table of tables) {
      for (const [id] of await allRecords(admin, table)) {
        if (!before.get(table)?.has(id)) await admin.delete(`/api/${table}/${encodeURIComponent(id)}`);
      }
    }
  });
}

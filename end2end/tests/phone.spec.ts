// The sign app on a phone (390×844, as sign owners use it standing next to the
// sign): the main flow by touch-sized buttons, nothing wider than the screen,
// no drag hints where touch cannot drag; and screenshots of every page at
// desktop and phone size, saved by the run into test-results/screenshots/.
import * as path from "node:path";
import { type Page } from "@playwright/test";
import { test, expect, uid } from "./fixtures";
import {
  SCREENSHOTS,
  allRecords,
  expectShowing,
  libraryItem,
  message,
  playlistOrder,
  playlistRow,
  put,
  cleanUpEachTest,
} from "./records";

cleanUpEachTest(test);

const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };

/** What does not fit a phone: elements past the screen's edges, and controls under 40 px tall. */
async function phoneProblems(page: Page): Promise<{ wide: string[]; small: string[]; overflow: number }> {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const name = (el: Element) =>
      `${el.tagName.toLowerCase()}${el.getAttribute("data-testid") ? `[${el.getAttribute("data-testid")}]` : ""}` +
      `${el.className && typeof el.className === "string" ? `.${el.className.split(" ").join(".")}` : ""}` +
      ` "${(el.textContent ?? "").trim().slice(0, 30)}"`;
    const wide: string[] = [];
    const small: string[] = [];
    const controls =
      "button, a.button, select, textarea, .nav a, " +
      "input:not([type=checkbox]):not([type=radio]):not([type=range]):not([type=hidden])";
    for (const el of Array.from(document.querySelectorAll("body *"))) {
      const r = el.getBoundingClientRect();
      if (r.width <= 1 || r.height <= 1) continue;
      const style = getComputedStyle(el);
      // Hidden, or only for screen readers (clipped to nothing): not on screen.
      if (style.visibility === "hidden" || style.clip === "rect(0px, 0px, 0px, 0px)") continue;
      // Inside a box that scrolls sideways (a wide table) is fine: it scrolls.
      let scrolls = false;
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        const o = getComputedStyle(p).overflowX;
        if (o === "auto" || o === "scroll" || o === "hidden") {
          scrolls = true;
          break;
        }
      }
      if (!scrolls && (r.right > width + 1 || r.left < -1)) wide.push(`${name(el)} ${Math.round(r.right)}px`);
      if (el.matches(controls) && r.height < 40) small.push(`${name(el)} ${Math.round(r.height)}px`);
    }
    return { wide, small, overflow: document.documentElement.scrollWidth - width };
  });
}

async function expectFitsAPhone(page: Page): Promise<void> {
  const problems = await phoneProblems(page);
  expect(problems.wide, "elements wider than the screen").toEqual([]);
  expect(problems.small, "controls shorter than 40 px").toEqual([]);
  expect(problems.overflow, "sideways scrolling").toBeLessThanOrEqual(0);
}

async function live(page: Page): Promise<void> {
  await expect(page.getByTestId("live-status").first()).toHaveAttribute("data-state", "live");
}

/** Opens `url` and waits until the page is drawn (and live, where it has a live
 * connection; `ready`: a test id the page shows once it has its records). */
async function settle(page: Page, url: string, ready?: string): Promise<void> {
  await page.goto(url);
  await expect(page.locator(".main")).toBeVisible();
  await page.waitForLoadState("load");
  if ((await page.getByTestId("live-status").count()) > 0) await live(page);
  if (ready) await expect(page.getByTestId(ready).first()).toBeVisible();
}

test.describe("on a phone", () => {
  test.use({ viewport: PHONE });

  test("the main flow works by buttons, every control fits a finger and the screen", async ({
    page,
    request,
  }) => {
    const id = uid();
    const name = `Kiosk ${id}`;
    const [a, b] = [`p_${id}_a`, `p_${id}_b`];
    await put(request, "messages", a, message("OPEN"));
    await put(request, "messages", b, message("CLOSED"));

    await page.goto("/");
    await live(page);
    await expectFitsAPhone(page);
    const form = page.getByTestId("new-sign");
    await form.getByTestId("sign-name-input").fill(name);
    await form.getByTestId("sign-create").click();
    await page.getByTestId("sign-made").getByRole("link").click();
    await expect(page.getByTestId("sign-name")).toHaveText(name);
    await live(page);
    const signId = (await allRecords(request, "signs")).find(([, v]) => v.name === name)![0];

    // No drag hints on a phone: reordering is by buttons.
    await expect(page.locator(".stage-hint")).toBeHidden();
    await expect(page.getByTestId("trash")).toBeHidden();
    await expect(page.locator(".grip").first()).toBeHidden();

    await libraryItem(page, a).getByTestId("add-to-playlist").click();
    await libraryItem(page, b).getByTestId("add-to-playlist").click();
    await expect.poll(() => playlistOrder(page)).toEqual([a, b]);
    await playlistRow(page, a).getByRole("button", { name: "Move down" }).click();
    await expect.poll(() => playlistOrder(page)).toEqual([b, a]);
    await expectFitsAPhone(page);
    await libraryItem(page, a).getByTestId("show-now").click();
    await expectShowing(page.getByTestId("sign-canvas"), a);
    expect((await (await request.get(`/api/signs/${signId}`)).json()).shows).toEqual({ message: a });

    await page.goto(`/messages?id=${a}`);
    await live(page);
    await expect(page.getByTestId("message-text")).toHaveValue("OPEN");
    await expectFitsAPhone(page);
  });

  test("every other page fits the screen", async ({ page }) => {
    for (const url of ["/data", "/devices", "/account", "/admin"]) {
      await settle(page, url);
      await expectFitsAPhone(page);
    }
  });
});

test("screenshots of every page at desktop and phone size", async ({ page, request }) => {
  const id = uid();
  const [a, b] = [`shot_${id}_a`, `shot_${id}_b`];
  const signId = `shot_${id}`;
  await put(request, "messages", a, message("WELCOME", { color: "rainbow" }));
  await put(request, "messages", b, message("OPEN 9-5", { color: "#ff3030" }));
  await put(request, "signs", signId, {
    name: "Front window",
    color_depth: "mono_amber",
    shows: { playlist: [{ message: a }, { message: b, duration: 15 }], position: 0 },
  });
  const pages: [string, string, string?][] = [
    ["signs", "/", "thumb"],
    ["sign", `/signs/${signId}`, "playlist-item"],
    ["messages", `/messages?id=${a}&sign=${signId}`, "depth-note"],
    ["data", "/data"],
    ["devices", "/devices"],
    ["account", "/account"],
    ["admin", "/admin"],
    ["not-found", "/no-such-page"],
  ];
  for (const [size, viewport] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ] as const) {
    await page.setViewportSize(viewport);
    for (const [label, url, ready] of pages) {
      await settle(page, url, ready);
      await page.screenshot({ path: path.join(SCREENSHOTS, `${label}-${size}.png`), fullPage: true });
    }
  }
});

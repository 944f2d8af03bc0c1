// The sign app as a newcomer meets it (issue 12): led from the first visit to a
// message on a sign, signs that show colour, errors in words next to their
// field, what happened said after each action, characters the sign cannot draw,
// which message is on a sign, and edits that meet a change made elsewhere.
import { test, expect, uid } from "./fixtures";
import {
  allRecords,
  brightestLed,
  expectShowing,
  getRecord,
  ledHue,
  libraryItem,
  message,
  openSign,
  playlistRow,
  put,
  cleanUpEachTest,
} from "./records";

cleanUpEachTest(test);

test.use({ viewport: { width: 1400, height: 1200 } });

test("a first visit leads to a sign, a message for it, and that message on the sign", async ({
  page,
  request,
}) => {
  const id = uid();
  const name = `Lobby ${id}`;
  await page.goto("/");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  // Plain words, and the highlighted button is the first step.
  const intro = page.locator(".intro");
  await expect(intro).not.toContainText("WebSocket");
  await expect(intro).not.toContainText("MQTT");
  await expect(page.getByTestId("first-steps")).toContainText("Create a sign");
  await expect(intro.locator(".primary")).toHaveCount(1);
  await expect(intro.locator(".primary")).toHaveText("Create a sign");

  const form = page.getByTestId("new-sign");
  const nameInput = form.getByTestId("sign-name-input");
  await page.getByTestId("start-create").click();
  await expect(nameInput).toBeFocused();

  // An empty name is refused, in words, at the name.
  const before = (await allRecords(request, "signs")).length;
  await form.getByTestId("sign-create").click();
  await expect(form.locator('[data-testid="error"][data-for="name"]')).toContainText("Give the sign a name");
  await expect(nameInput).toHaveAttribute("aria-invalid", "true");
  await expect(nameInput).toBeFocused();
  expect((await allRecords(request, "signs")).length).toBe(before);

  // A new sign is full colour unless told otherwise.
  await expect(form.getByTestId("sign-colors-input")).toHaveValue("rgb");
  await nameInput.fill(name);
  await form.getByTestId("sign-create").click();
  const made = page.getByTestId("sign-made");
  await expect(made).toContainText(`“${name}” is ready`);
  const signs = await allRecords(request, "signs");
  const [signId, stored] = signs.find(([, value]) => value.name === name)!;
  expect(stored.color_depth).toBe("rgb");
  await expect(made.getByRole("link")).toBeFocused();
  await made.getByRole("link").click();
  await expect(page.getByTestId("sign-name")).toHaveText(name);
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");

  // From the sign, on to writing a message for it.
  await page.getByTestId("write-message").click();
  await expect(page).toHaveURL(new RegExp(`/messages\\?new=1&sign=${signId}`));
  const text = page.getByTestId("message-text");
  await expect(text).toBeFocused();
  const words = `WELCOME ${id.slice(-4)}`;
  await text.fill(words);
  await page.getByTestId("message-color").fill("#ff0000");
  await page.getByTestId("message-duration").fill("3600");
  await page.getByTestId("message-save").click();
  await expect(page.getByTestId("message-note")).toContainText("Created");
  const show = page.getByTestId("show-on-sign");
  await expect(show).toHaveText(`Show it on ${name} now`);
  const messageId = (await page.getByTestId("message-item").filter({ hasText: words }).getAttribute("data-id"))!;
  await show.click();

  // Back on the sign, which shows it, in its own colour, marked in the library.
  await expect(page).toHaveURL(new RegExp(`/signs/${signId}$`));
  const canvas = page.getByTestId("sign-canvas");
  await expectShowing(canvas, messageId);
  await expect.poll(async () => ledHue(await brightestLed(canvas))).toBe("red");
  await expect(libraryItem(page, messageId).getByTestId("on-sign")).toBeVisible();
  expect((await getRecord(request, "signs", signId)).shows).toEqual({ message: messageId });
});

test("a sign's colours reach the sign, its thumbnail and the editor's preview", async ({
  page,
  request,
}) => {
  const id = uid();
  const signId = `shop_${id}`;
  const red = `red_${id}`;
  const name = `Shop ${id}`;
  await put(request, "messages", red, message("RED", { color: "#ff0000" }));
  await put(request, "signs", signId, { name, color_depth: "rgb", shows: { message: red } });

  await page.goto("/");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const card = page.locator(`[data-testid="sign-card"][data-id="${signId}"]`);
  const thumb = card.getByTestId("thumb");
  await expectShowing(thumb, red);
  await expect.poll(async () => ledHue(await brightestLed(thumb))).toBe("red");
  await expect(card.getByTestId("sign-colors")).toHaveText("Full colour");

  // Made a one-colour sign: the thumbnail turns amber.
  await card.getByTestId("sign-edit").click();
  await expect(card.getByTestId("sign-colors-input")).toHaveValue("rgb");
  await card.getByTestId("sign-colors-input").selectOption({ label: "Amber only" });
  await card.getByRole("button", { name: "Save" }).click();
  await expect(card.getByTestId("sign-colors")).toHaveText("Amber only");
  expect((await getRecord(request, "signs", signId)).color_depth).toBe("mono_amber");
  await expect.poll(async () => ledHue(await brightestLed(thumb))).toBe("amber");

  // The editor previews a message as the chosen sign shows it, and says why.
  await page.goto(`/messages?id=${red}&sign=${signId}`);
  const preview = page.getByTestId("message-preview");
  await expect(page.getByTestId("message-text")).toHaveValue("RED");
  await expect(page.getByTestId("preview-sign")).toHaveValue(signId);
  await expect(page.getByTestId("depth-note")).toContainText(`${name} can only show amber`);
  await expect.poll(async () => ledHue(await brightestLed(preview))).toBe("amber");
  await page.getByTestId("preview-sign").selectOption("");
  await expect(page.getByTestId("depth-note")).toHaveCount(0);
  await expect.poll(async () => ledHue(await brightestLed(preview))).toBe("red");
});

test("errors say what is wrong in words, once, next to the field that caused it", async ({
  page,
  request,
}) => {
  const id = uid();
  await page.goto("/");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const form = page.getByTestId("new-sign");
  await form.getByTestId("sign-name-input").fill(`Wide ${id}`);
  await form.getByTestId("sign-width-input").fill("9999");
  await form.getByTestId("sign-create").click();
  await expect(form.locator('[data-testid="error"][data-for="width"]')).toHaveText(
    "The width must be between 1 and 256.",
  );
  await expect(form.getByTestId("sign-width-input")).toHaveAttribute("aria-invalid", "true");
  await expect(form.getByTestId("sign-width-input")).toBeFocused();
  await expect(form.getByTestId("error")).toHaveCount(1);

  const messageId = `m_${id}`;
  await put(request, "messages", messageId, message("STEADY"));
  await page.goto(`/messages?id=${messageId}`);
  const editor = page.getByTestId("message-editor");
  await expect(page.getByTestId("message-text")).toHaveValue("STEADY");
  await page.getByTestId("message-speed").fill("0");
  await expect(editor.locator('[data-testid="error"][data-for="speed"]')).toHaveText(
    "The speed must be between 1 and 500.",
  );
  await page.getByTestId("message-save").click();
  await expect(page.getByTestId("message-speed")).toBeFocused();
  await expect(editor.getByTestId("error")).toHaveCount(1);
  await expect(editor).not.toContainText("(invalid");
  expect((await getRecord(request, "messages", messageId)).speed).toBe(20);

  // A bad playlist duration is named in its own row.
  const signId = `hall_${id}`;
  await put(request, "signs", signId, {
    name: "Hall",
    shows: { playlist: [{ message: messageId }, { message: messageId, duration: 5 }], position: 0 },
  });
  await openSign(page, signId);
  const second = page.getByTestId("playlist-item").nth(1);
  await second.getByTestId("playlist-duration").fill("0");
  await second.getByTestId("playlist-duration").press("Tab");
  await expect(second.locator('[data-testid="error"][data-for="seconds"]')).toContainText(
    "Seconds must be a whole number",
  );
  await expect(second.getByTestId("playlist-duration")).toHaveAttribute("aria-invalid", "true");
  await expect(page.getByTestId("playlist-item").nth(0).getByTestId("error")).toHaveCount(0);
  expect((await getRecord(request, "signs", signId)).shows.playlist[1].duration).toBe(5);
});

test("saving and duplicating say what happened, and the copy is named and selected", async ({
  page,
  request,
}) => {
  const id = uid();
  const original = `hello_${id}`;
  await put(request, "messages", original, message("HELLO"));
  await page.goto(`/messages?id=${original}`);
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await expect(page.getByTestId("message-text")).toHaveValue("HELLO");
  await page.getByTestId("message-text").fill("HELLO THERE");
  await page.getByTestId("message-save").click();
  await expect(page.getByTestId("message-note")).toContainText("Saved");
  await expect.poll(async () => (await getRecord(request, "messages", original)).text).toBe("HELLO THERE");

  await page.getByTestId("message-duplicate").click();
  const copy = `${original}-copy`;
  await expect(page.getByTestId("message-note")).toContainText(`Duplicated as “${copy}”`);
  await expect(page.getByTestId("editing")).toContainText(copy);
  const copyItem = page.locator(`[data-testid="message-item"][data-id="${copy}"]`);
  await expect(copyItem).toHaveAttribute("aria-current", "true");
  await expect(copyItem).toContainText(copy);
  await expect(page.locator(`[data-testid="message-item"][data-id="${original}"]`)).not.toHaveAttribute(
    "aria-current",
    "true",
  );
  expect((await getRecord(request, "messages", copy)).text).toBe("HELLO THERE");

  // Editing now changes the copy, not the original.
  await page.getByTestId("message-text").fill("ONLY THE COPY");
  await page.getByTestId("message-save").click();
  await expect(page.getByTestId("message-note")).toContainText("Saved");
  await expect.poll(async () => (await getRecord(request, "messages", copy)).text).toBe("ONLY THE COPY");
  expect((await getRecord(request, "messages", original)).text).toBe("HELLO THERE");
});

test("the editor names the characters the sign cannot draw before saving", async ({ page }) => {
  await page.goto("/messages");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await page.getByTestId("message-new").click();
  const warning = page.getByTestId("glyph-warning");
  await page.getByTestId("message-text").fill("Café ½ OK");
  await expect(page.getByTestId("message-preview")).toHaveAttribute("data-lit", /^[1-9]\d*$/);
  await expect(warning).toHaveCount(0);
  await page.getByTestId("message-text").fill("OK ✓ 日本");
  await expect(warning).toContainText("“✓”, “日”, “本”");
  await expect(warning).toContainText("empty box");
  await page.getByTestId("message-font").selectOption("tall");
  await expect(warning).toContainText("“✓”");
  await page.getByTestId("message-text").fill("OK");
  await expect(warning).toHaveCount(0);
});

test("the message on a sign is marked, and a message in use warns before it is deleted", async ({
  page,
  request,
}) => {
  const id = uid();
  const [a, b] = [`a_${id}`, `b_${id}`];
  const signId = `door_${id}`;
  const name = `Door ${id}`;
  await put(request, "messages", a, message("OPEN"));
  await put(request, "messages", b, message("CLOSED"));
  await put(request, "signs", signId, { name, shows: { message: a } });

  const canvas = await openSign(page, signId);
  await expect(libraryItem(page, a).getByTestId("on-sign")).toBeVisible();
  await expect(libraryItem(page, b).getByTestId("on-sign")).toHaveCount(0);
  await libraryItem(page, b).getByTestId("show-now").click();
  await expectShowing(canvas, b);
  await expect(libraryItem(page, b).getByTestId("on-sign")).toBeVisible();
  await expect(libraryItem(page, a).getByTestId("on-sign")).toHaveCount(0);
  // In a playlist, the row playing now is marked too.
  await libraryItem(page, a).getByTestId("add-to-playlist").click();
  await expect(playlistRow(page, a)).toHaveClass(/current/);

  await page.goto(`/messages?id=${a}`);
  await expect(page.getByTestId("used-by")).toContainText(`${name} (on it now)`);
  await expect(page.locator(`[data-testid="message-item"][data-id="${a}"] [data-testid="used-on"]`)).toContainText(
    name,
  );
  await page.goto(`/messages?id=${b}`);
  await expect(page.getByTestId("message-text")).toHaveValue("CLOSED");
  await expect(page.getByTestId("used-by")).toHaveCount(0);
});

test("an edit that meets a change from elsewhere shows both, and the user keeps theirs or takes the other", async ({
  page,
  request,
}) => {
  const id = uid();
  const m = `news_${id}`;
  await put(request, "messages", m, message("ORIGINAL"));
  await page.goto(`/messages?id=${m}`);
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const text = page.getByTestId("message-text");
  await expect(text).toHaveValue("ORIGINAL");

  // Another tab saves while this one is editing.
  await text.fill("MINE");
  await put(request, "messages", m, message("THEIRS"));
  const conflict = page.getByTestId("conflict");
  await expect(conflict).toBeVisible();
  await expect(conflict.getByTestId("conflict-mine")).toHaveText("MINE");
  await expect(conflict.getByTestId("conflict-theirs")).toHaveText("THEIRS");
  await expect(page.getByTestId("message-save")).toBeDisabled();
  await conflict.getByTestId("keep-mine").click();
  await expect(conflict).toHaveCount(0);
  await expect(page.getByTestId("message-note")).toContainText("Saved");
  await expect.poll(async () => (await getRecord(request, "messages", m)).text).toBe("MINE");

  // Again, and this time the other version wins.
  await text.fill("MINE AGAIN");
  await put(request, "messages", m, message("THEIRS AGAIN"));
  await expect(conflict).toBeVisible();
  await conflict.getByTestId("take-theirs").click();
  await expect(conflict).toHaveCount(0);
  await expect(text).toHaveValue("THEIRS AGAIN");
  expect((await getRecord(request, "messages", m)).text).toBe("THEIRS AGAIN");
  // Saving goes on working afterwards: no version error left behind.
  await text.fill("FINAL");
  await page.getByTestId("message-save").click();
  await expect(page.getByTestId("message-note")).toContainText("Saved");
  await expect.poll(async () => (await getRecord(request, "messages", m)).text).toBe("FINAL");
  await expect(page.getByTestId("error")).toHaveCount(0);
});

// Browser tests of accounts and sign-in: the setup link once only, signing in
// and out, a wrong password, device accounts, what a viewer is offered and
// refused, and a sign-out in one tab reaching another tab's live page.
import {
  test,
  expect,
  ADMIN,
  createAccount,
  signIn,
  signedOutContext,
  uid,
} from "./fixtures";

// Every test here starts signed out; `admin` is the admin's API client.
test.use({ storageState: { cookies: [], origins: [] } });

test("the setup link works once: a second use is refused", async ({ page, request }) => {
  const link = process.env.MARQUEE_SETUP_URL;
  test.skip(!link, "the server made its admin from MARQUEE_ADMIN_PASSWORD: no setup link");
  await page.goto(link!);
  await expect(page.getByLabel("User name")).toBeFocused();
  await page.getByLabel("User name").fill(`intruder-${uid()}`);
  await page.getByLabel("Password", { exact: true }).fill("another password");
  await page.getByLabel("Password again").fill("another password");
  await page.getByRole("button", { name: "Create admin and sign in" }).click();
  const error = page.locator('[data-testid="error"][data-for="setup"]');
  await expect(error).toBeVisible();
  await expect(page.getByRole("link", { name: "Sign in instead" })).toBeVisible();
  await expect(page).toHaveURL(/\/setup#/);
  await expect(page.getByTestId("user-menu")).toHaveCount(0);
  expect((await request.get("/api/auth/me")).status()).toBe(401);
});

test("signing in returns to the page asked for; signing out leaves no way back in", async ({
  page,
}) => {
  await page.goto("/messages");
  // Sent to sign in, remembering where we were.
  await expect(page).toHaveURL(/\/login\?next=\/messages$/);
  await expect(page.getByRole("heading", { name: "Sign in" })).toBeVisible();
  await expect(page.getByLabel("User name")).toHaveAttribute("autocomplete", "username");
  await expect(page.getByLabel("Password", { exact: true })).toHaveAttribute(
    "autocomplete",
    "current-password",
  );
  await signIn(page, ADMIN.username, ADMIN.password);
  await expect(page).toHaveURL(/\/messages$/);
  await expect(page.getByTestId("role")).toHaveText("admin");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");

  await page.getByTestId("whoami").click();
  await page.getByRole("menuitem", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login/);
  await expect(page.getByTestId("user-menu")).toHaveCount(0);
  // The session is gone on the server too: any page leads back to sign-in.
  await page.goto("/data");
  await expect(page).toHaveURL(/\/login\?next=\/data$/);
  expect((await page.request.get("/api/auth/me")).status()).toBe(401);
});

test("a wrong password is refused in words and signs no one in", async ({ page, admin }) => {
  const user = await createAccount(admin, "editor");
  await page.goto("/login");
  await expect(page.getByLabel("User name")).toBeFocused();
  await page.getByLabel("User name").fill(user.username);
  await page.getByLabel("Password", { exact: true }).fill("not the password");
  await page.getByLabel("Password", { exact: true }).press("Enter");
  const error = page.locator('[data-testid="error"][data-for="login"]');
  await expect(error).toHaveText("Invalid username or password.");
  await expect(page).toHaveURL(/\/login$/);
  await expect(page.getByRole("button", { name: "Sign in" })).toBeEnabled();
  await expect(page.getByTestId("user-menu")).toHaveCount(0);

  // Typing again clears the old error; the right password signs in.
  await page.getByLabel("Password", { exact: true }).fill(user.password);
  await expect(error).toHaveCount(0);
  await page.getByLabel("Password", { exact: true }).press("Enter");
  await expect(page.getByTestId("username")).toHaveText(user.username);
  await expect(page.getByTestId("role")).toHaveText("editor");
});

test("a device account cannot sign in to the web app", async ({ page, admin }) => {
  const device = await createAccount(admin, "device");
  await page.goto("/login");
  await expect(page.getByLabel("User name")).toBeFocused();
  await page.getByLabel("User name").fill(device.username);
  await page.getByLabel("Password", { exact: true }).fill(device.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.locator('[data-testid="error"][data-for="login"]')).toContainText(
    "evice accounts cannot sign in",
  );
  await expect(page.getByTestId("user-menu")).toHaveCount(0);
});

test("a viewer sees no edit controls, and a write from the console is refused", async ({
  page,
  admin,
}) => {
  const id = uid();
  const signId = `view_${id}`;
  const messageId = `m_${id}`;
  for (const [table, key, value] of [
    ["messages", messageId, { text: "LOOK", effect: "static", duration: 3600 }],
    ["signs", signId, { name: `Viewed ${id}`, shows: { playlist: [{ message: messageId }] } }],
  ] as const) {
    const response = await admin.put(`/api/${table}/${key}`, { data: value });
    expect(response.ok(), await response.text()).toBe(true);
  }
  const viewer = await createAccount(admin, "viewer");
  await page.goto("/");
  await signIn(page, viewer.username, viewer.password);
  await expect(page.getByTestId("role")).toHaveText("viewer");
  // No admin page offered.
  await expect(page.getByRole("link", { name: "Users" })).toHaveCount(0);

  // The sign list: thumbnails, but no new-sign form and no rename or delete.
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  const card = page.locator(`[data-testid="sign-card"][data-id="${signId}"]`);
  await expect(card).toBeVisible();
  await expect(page.getByTestId("new-sign")).toHaveCount(0);
  await expect(card.getByTestId("sign-edit")).toHaveCount(0);
  await expect(card.getByTestId("sign-delete")).toHaveCount(0);

  // The sign: it plays, but nothing to drag, press or slide.
  await page.goto(`/signs/${signId}`);
  await expect(page.getByTestId("sign-canvas")).toHaveAttribute("data-message", messageId);
  await expect(page.getByTestId("brightness")).toBeDisabled();
  await expect(page.getByTestId("mode-playlist")).toBeDisabled();
  const item = page.locator(`[data-testid="library-item"][data-message="${messageId}"]`);
  await expect(item).toHaveAttribute("draggable", "false");
  await expect(item.getByTestId("show-now")).toBeHidden();
  await expect(item.getByTestId("add-to-playlist")).toBeHidden();
  await expect(page.getByTestId("playlist-item")).toHaveAttribute("draggable", "false");
  await expect(page.getByTestId("playlist-remove")).toBeHidden();
  await expect(page.getByTestId("trash")).toBeHidden();

  // The library: read, not written.
  await page.goto(`/messages?id=${messageId}`);
  await expect(page.getByTestId("message-text")).toHaveValue("LOOK");
  await expect(page.getByTestId("message-text")).toBeDisabled();
  await expect(page.getByTestId("message-new")).toHaveCount(0);
  await expect(page.getByTestId("message-save")).toHaveCount(0);
  await expect(page.getByTestId("message-delete")).toHaveCount(0);

  // The data explorer: records, no editor.
  await page.goto("/data?table=messages");
  const row = page.locator(`[data-testid="record-row"][data-id="${messageId}"]`);
  await expect(row).toBeVisible();
  await expect(row.getByTestId("record-edit")).toHaveCount(0);
  await expect(row.getByTestId("record-delete")).toHaveCount(0);
  await expect(page.getByTestId("new-create")).toHaveCount(0);

  // The admin page says it is not for viewers.
  await page.goto("/admin");
  await expect(page.getByRole("heading", { name: "Admins only" })).toBeVisible();

  // A write typed into the console is refused by the server.
  const status = await page.evaluate(async (id) => {
    const response = await fetch(`/api/messages/${id}`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: "DEFACED" }),
    });
    return response.status;
  }, messageId);
  expect(status).toBe(403);
  expect((await (await admin.get(`/api/messages/${messageId}`)).json()).text).toBe("LOOK");
});

test("signing out in one tab sends the other tab's live sign page to sign-in", async ({
  page,
  context,
  admin,
}) => {
  const signId = `tabs_${uid()}`;
  const response = await admin.put(`/api/signs/${signId}`, { data: { name: "Two tabs" } });
  expect(response.ok()).toBe(true);
  await page.goto(`/signs/${signId}`);
  await expect(page).toHaveURL(/\/login\?next=/);
  await signIn(page, ADMIN.username, ADMIN.password);
  await expect(page).toHaveURL(new RegExp(`/signs/${signId}$`));
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");

  const other = await context.newPage();
  await other.goto("/account");
  await expect(other.getByTestId("username")).toHaveText(ADMIN.username);
  await other.getByTestId("whoami").click();
  await other.getByRole("menuitem", { name: "Sign out" }).click();
  await expect(other).toHaveURL(/\/login/);

  // The first tab did nothing, yet it is back at sign-in, remembering the sign.
  await expect(page).toHaveURL(new RegExp(`/login\\?next=/signs/${signId}$`));
  await expect(page.getByLabel("User name")).toBeVisible();
  await signIn(page, ADMIN.username, ADMIN.password);
  await expect(page).toHaveURL(new RegExp(`/signs/${signId}$`));
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await other.close();
});

test("changing your password signs out your other browsers", async ({ page, browser, admin, baseURL }) => {
  const user = await createAccount(admin, "editor");
  const elsewhere = await signedOutContext(browser, baseURL!);
  const away = await elsewhere.newPage();
  await away.goto("/");
  await signIn(away, user.username, user.password);
  await expect(away.getByTestId("live-status")).toHaveAttribute("data-state", "live");

  await page.goto("/account");
  await expect(page).toHaveURL(/\/login\?next=\/account$/);
  await signIn(page, user.username, user.password);
  await expect(page).toHaveURL(/\/account$/);
  const form = page.getByTestId("password-form");
  await expect(form.getByLabel("Current password")).toBeFocused();
  await expect(form.getByLabel("New password", { exact: true })).toHaveAttribute(
    "autocomplete",
    "new-password",
  );
  await form.getByLabel("Current password").fill("wrong password");
  await form.getByLabel("New password", { exact: true }).fill("a new password");
  await form.getByLabel("New password again").fill("a new password");
  await form.getByLabel("New password again").press("Enter");
  await expect(page.locator('[data-testid="error"][data-for="password"]')).toHaveText(
    "Invalid username or password.",
  );
  await form.getByLabel("Current password").fill(user.password);
  await form.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByText("Password changed.")).toBeVisible();
  // This browser stays signed in; the other one is sent to sign in.
  await expect(page.getByTestId("username")).toHaveText(user.username);
  await expect(away).toHaveURL(/\/login/);
  await signIn(away, user.username, "a new password");
  await elsewhere.close();
});

// Browser tests of the admin's Users page (accounts, everyone's tokens) and
// of API tokens on the account page. The browser is the admin here.
import { test, expect, signIn, signedOutContext, uid } from "./fixtures";

test("the users page creates, changes, resets and deletes accounts", async ({
  page,
  browser,
  request,
  baseURL,
}) => {
  const username = `ann-${uid()}`;
  await page.goto("/");
  await page.getByRole("link", { name: "Users" }).click();
  await expect(page).toHaveURL(/\/admin$/);
  const users = page.getByTestId("users");
  await expect(users.getByTestId("account-row").first()).toBeVisible();

  // A new editor with a password the server makes, shown once.
  const form = page.getByTestId("new-account");
  await form.getByLabel("User name").fill(username);
  await form.getByTestId("new-role").selectOption("editor");
  await form.getByRole("button", { name: "Create account" }).click();
  const generated = users.getByTestId("generated-password");
  await expect(generated).toHaveValue(/.{8,}/);
  const password = await generated.inputValue();
  const row = users.locator(`[data-testid="account-row"][data-username="${username}"]`);
  await expect(row.getByTestId("account-role")).toHaveValue("editor");
  await expect(row.getByTestId("account-status")).toHaveText("active");
  await users.getByRole("button", { name: "Done" }).click();
  await expect(generated).toHaveCount(0);

  // The password works: that account signs in elsewhere.
  const elsewhere = await signedOutContext(browser, baseURL!);
  const theirs = await elsewhere.newPage();
  await signIn(theirs, username, password);
  await expect(theirs.getByTestId("role")).toHaveText("editor");

  // Made a viewer: the server ends that account's sessions, so its browser returns to sign-in.
  await row.getByTestId("account-role").selectOption("viewer");
  await expect(row.getByTestId("account-role")).toHaveValue("viewer");
  await expect
    .poll(async () => (await (await request.get("/api/accounts")).json()).items.find((a: any) => a.username === username)?.role)
    .toBe("viewer");

  // Disabled, then enabled again.
  await row.getByTestId("account-toggle").click();
  await expect(row.getByTestId("account-status")).toHaveText("disabled");
  await row.getByTestId("account-toggle").click();
  await expect(row.getByTestId("account-status")).toHaveText("active");

  // A reset shows a new password once; the old one no longer works.
  await row.getByTestId("account-reset").click();
  await expect(row.getByTestId("account-reset")).toHaveText("Confirm reset");
  await row.getByTestId("account-reset").click();
  await expect(generated).toHaveValue(/.{8,}/);
  const reset = await generated.inputValue();
  expect(reset).not.toBe(password);
  await theirs.goto("/login");
  await theirs.getByLabel("User name").fill(username);
  await theirs.getByLabel("Password", { exact: true }).fill(password);
  await theirs.getByLabel("Password", { exact: true }).press("Enter");
  await expect(theirs.locator('[data-testid="error"][data-for="login"]')).toBeVisible();
  await signIn(theirs, username, reset);
  await expect(theirs.getByTestId("role")).toHaveText("viewer");
  await elsewhere.close();

  // The last admin cannot stop being one: refused in words, the picker shows admin again.
  const admins = (await (await request.get("/api/accounts")).json()).items.filter(
    (a: any) => a.role === "admin" && !a.disabled,
  );
  if (admins.length === 1) {
    const me = users.locator(`[data-testid="account-row"][data-username="${admins[0].username}"]`);
    await me.getByTestId("account-role").selectOption("editor");
    await expect(me.locator('[data-testid="error"][data-for="account"]')).toBeVisible();
    await expect(me.getByTestId("account-role")).toHaveValue("admin");
  }

  // Deleted, after a second press.
  await row.getByTestId("account-delete").click();
  await row.getByTestId("account-delete").click();
  await expect(row).toHaveCount(0);
  expect((await request.get(`/api/accounts/${username}`)).status()).toBe(404);
});

test("an API token is shown once, works as a bearer, and stops when revoked", async ({
  page,
  playwright,
  baseURL,
}) => {
  const name = `script ${uid()}`;
  await page.goto("/");
  await page.getByTestId("whoami").click();
  await page.getByRole("menuitem", { name: "Your account and password" }).click();
  await expect(page).toHaveURL(/\/account$/);
  const tokens = page.getByTestId("tokens");
  await tokens.getByLabel("New token's name").fill(name);
  await tokens.getByLabel("New token's name").press("Enter");
  const secret = tokens.getByTestId("token-secret");
  await expect(secret).toHaveValue(/^mqt_/);
  const token = await secret.inputValue();
  const row = tokens.locator(`[data-testid="token-row"][data-name="${name}"]`);
  await expect(row.getByTestId("token-last-used")).toHaveText("never");

  // A script with the token acts as the admin.
  const script = await playwright.request.newContext({
    baseURL,
    extraHTTPHeaders: { Authorization: `Bearer ${token}` },
  });
  const me = await script.get("/api/auth/me");
  expect(me.status()).toBe(200);

  // Shown once: after a reload only its name and times are listed.
  await page.reload();
  await expect(row).toBeVisible();
  await expect(tokens.getByTestId("token-secret")).toHaveCount(0);
  await expect(page.getByText(token)).toHaveCount(0);
  // The script's call is its first use.
  await expect(row.getByTestId("token-last-used")).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);

  // The admin page lists everyone's tokens, this one among them.
  await page.goto("/admin");
  await expect(
    page.locator(`[data-testid="tokens"] [data-testid="token-row"][data-name="${name}"]`),
  ).toBeVisible();

  await page.goto("/account");
  await row.getByTestId("token-revoke").click();
  await expect(row.getByTestId("token-revoke")).toHaveText("Confirm revoke");
  await row.getByTestId("token-revoke").click();
  await expect(row).toHaveCount(0);
  expect((await script.get("/api/auth/me")).status()).toBe(401);
  await script.dispose();
});

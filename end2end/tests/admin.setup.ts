// The `setup` project: the first run, through the link Marquee printed. It
// makes the admin every other test signs in as, and saves that browser state.
import { test as setup, expect } from "@playwright/test";
import { ADMIN, ADMIN_STATE } from "../auth-state";

setup("first run: the printed setup link makes the admin and signs it in", async ({ page }) => {
  const link = process.env.MARQUEE_SETUP_URL;
  if (link) {
    // The token travels in the fragment, which a browser never sends to the server.
    expect(new URL(link).hash).toMatch(/^#mqx_/);
    // Before setup, any page leads to setup.
    await page.goto("/");
    await expect(page).toHaveURL(/\/setup$/);
    await expect(page.getByTestId("error").filter({ hasText: "setup link" })).toBeVisible();

    await page.goto(link);
    await expect(page.getByRole("heading", { name: "Set up Marquee" })).toBeVisible();
    const name = page.getByLabel("User name");
    await expect(name).toBeFocused();
    await expect(name).toHaveValue("admin");
    await name.fill(ADMIN.username);
    await page.getByLabel("Password", { exact: true }).fill(ADMIN.password);
    // Two different passwords: said in the page, nothing sent.
    await page.getByLabel("Password again").fill(`${ADMIN.password}!`);
    await page.getByLabel("Password again").press("Enter");
    await expect(page.locator('[data-testid="error"][data-for="setup"]')).toContainText("differ");
    await page.getByLabel("Password again").fill(ADMIN.password);
    await page.getByLabel("Password again").press("Enter");
  } else {
    // A server whose admin came from MARQUEE_ADMIN_PASSWORD: sign in instead.
    await page.goto("/login");
    await page.getByLabel("User name").fill(ADMIN.username);
    await page.getByLabel("Password", { exact: true }).fill(ADMIN.password);
    await page.getByLabel("Password", { exact: true }).press("Enter");
  }
  // Signed in, on the sign list, as the admin.
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByTestId("username")).toHaveText(ADMIN.username);
  await expect(page.getByTestId("role")).toHaveText("admin");
  await expect(page.getByRole("link", { name: "Users" })).toBeVisible();
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await page.context().storageState({ path: ADMIN_STATE });
});

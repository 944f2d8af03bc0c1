// The `test` every spec uses: Playwright's, with an API client that acts as
// the browser's signed-in account, and helpers for signing in.
import {
  test as base,
  expect,
  type APIRequestContext,
  type Browser,
  type BrowserContext,
  type Page,
} from "@playwright/test";
import { ADMIN, ADMIN_STATE } from "../auth-state";

export { expect, ADMIN, ADMIN_STATE };

/** An API client with `state`'s cookies and this server's Origin, which a
 * cookie-authenticated change must carry (as a browser's would). */
export async function apiClient(
  playwright: { request: { newContext: (options: any) => Promise<APIRequestContext> } },
  baseURL: string,
  state: string | { cookies: any[]; origins: any[] } | undefined,
): Promise<APIRequestContext> {
  return playwright.request.newContext({
    baseURL,
    storageState: state,
    extraHTTPHeaders: { Origin: new URL(baseURL).origin },
  });
}

export const test = base.extend<{ admin: APIRequestContext }>({
  // `request` acts as whoever the test's browser is signed in as.
  request: async ({ playwright, baseURL, storageState }, use) => {
    const client = await apiClient(playwright, baseURL!, storageState as any);
    await use(client);
    await client.dispose();
  },
  // `admin` is always the admin, whoever the browser is.
  admin: async ({ playwright, baseURL }, use) => {
    const client = await apiClient(playwright, baseURL!, ADMIN_STATE);
    await use(client);
    await client.dispose();
  },
});

/** A name no other test uses. */
export function uid(): string {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
}

/** A browser context signed in as no one. */
export async function signedOutContext(browser: Browser, baseURL: string): Promise<BrowserContext> {
  return browser.newContext({ baseURL, storageState: { cookies: [], origins: [] } });
}

/** Signs in through the sign-in page the app showed (else it opens /login), as a user would. */
export async function signIn(page: Page, username: string, password: string): Promise<void> {
  const name = page.getByLabel("User name");
  if (!new URL(page.url()).pathname.startsWith("/login")) {
    await page.goto("/login");
    // The page is live (hydrated) once it has put the cursor in the first field.
    await expect(name).toBeFocused();
  }
  await name.fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password", { exact: true }).press("Enter");
  await expect(page.getByTestId("username")).toHaveText(username);
}

/** The Cookie header of `client`'s session, for clients Playwright does not drive (Node's fetch). */
export async function cookieHeader(client: APIRequestContext): Promise<string> {
  const state = await client.storageState();
  return state.cookies.map((c) => `${c.name}=${c.value}`).join("; ");
}

/** Makes an account through the API, as the admin. */
export async function createAccount(
  admin: APIRequestContext,
  role: "admin" | "editor" | "viewer" | "device",
  password = `pw ${uid()}`,
): Promise<{ username: string; password: string }> {
  const username = `${role}-${uid()}`;
  const response = await admin.post("/api/accounts", { data: { username, role, password } });
  expect(response.status(), await response.text()).toBe(201);
  return { username, password };
}

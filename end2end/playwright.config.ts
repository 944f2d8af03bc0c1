import { defineConfig } from "@playwright/test";
import { ADMIN_STATE } from "./auth-state";

// The server is started outside (scripts/e2e.sh starts one on a free port and
// exports its address and its first-run setup link); the browser is the
// system's Chromium, never a download.
const baseURL = process.env.MARQUEE_URL || "http://127.0.0.1:3000";

export default defineConfig({
  testDir: "./tests",
  outputDir: "test-results",
  fullyParallel: false,
  workers: 1,
  retries: 0,
  forbidOnly: !!process.env.CI,
  timeout: 60_000,
  expect: { timeout: 15_000 },
  reporter: "list",
  use: {
    baseURL,
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
  projects: [
    // First: the printed setup link makes the admin; its signed-in state is saved.
    { name: "setup", testMatch: /.*\.setup\.ts/, use: { browserName: "chromium" } },
    // Then every other test starts signed in as that admin.
    {
      name: "chromium",
      use: { browserName: "chromium", storageState: ADMIN_STATE },
      dependencies: ["setup"],
    },
  ],
});

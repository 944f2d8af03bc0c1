// Browser tests of /devices: pairing a real sign (here an AWTRIX 3 clock simulated
// with MQTT.js, speaking to the broker as the clock's firmware does), watching it
// connect, binding it to a sign, and the sign's messages reaching it.
import { randomBytes } from "node:crypto";
import mqtt, { type MqttClient } from "mqtt";
import { type Locator, type Page } from "@playwright/test";
import { test, expect, createAccount, signIn, uid } from "./fixtures";
import { getRecord, put } from "./records";

// Tall enough that a drag's source and target are both on screen (see signs.spec.ts).
test.use({ viewport: { width: 1400, height: 1800 } });

/** What the pairing card shows for one of the firmware's settings fields. */
async function cardValue(card: Locator, label: string): Promise<string> {
  const value = card.locator(`[data-testid="pairing-field"][data-label="${label}"] [data-testid="pairing-value"]`);
  await expect(value).toHaveCount(1);
  return ((await value.textContent()) ?? "").trim();
}

async function openDevices(page: Page): Promise<void> {
  await page.goto("/devices");
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
}

/** A publish the simulated clock received. */
interface Received {
  topic: string;
  payload: string;
  at: number;
}

/** An AWTRIX 3 clock as its firmware connects: MQTT 3.1.1, clean session, keepalive 15,
 * an `offline` will, then its subscriptions and its first `stats`. */
async function awtrixClock(settings: {
  broker: string;
  port: string;
  username: string;
  password: string;
  prefix: string;
}): Promise<{ client: MqttClient; received: Received[] }> {
  const { broker, port, username, password, prefix } = settings;
  const host = broker.includes(":") ? `[${broker}]` : broker;
  const client = await mqtt.connectAsync(`mqtt://${host}:${port}`, {
    protocolVersion: 4,
    clean: true,
    keepalive: 15,
    clientId: `awtrix_${randomBytes(3).toString("hex")}`,
    username,
    password,
    will: { topic: `${prefix}/stats/device`, payload: Buffer.from("offline"), qos: 0, retain: false },
    reconnectPeriod: 0,
    connectTimeout: 5_000,
  });
  const received: Received[] = [];
  client.on("message", (topic, payload) => {
    received.push({ topic, payload: payload.toString(), at: Date.now() });
  });
  await client.subscribeAsync(
    [`${prefix}/custom/#`, `${prefix}/notify`, `${prefix}/switch`, `${prefix}/settings`, `${prefix}/power`],
    { qos: 0 },
  );
  await client.publishAsync(`${prefix}/stats/device`, "online");
  await client.publishAsync(
    `${prefix}/stats`,
    JSON.stringify({
      bat: 98,
      type: 0,
      lux: 12,
      bri: 80,
      temp: 22,
      hum: 41,
      uptime: 60,
      wifi_signal: -58,
      messages: 0,
      version: "0.98",
      indicator1: false,
      indicator2: false,
      indicator3: false,
      app: "Time",
      uid: "awtrix_a1b2c3",
      matrix: true,
      ip_address: "192.168.1.50",
    }),
  );
  return { client, received };
}

/** `host:port` (the host may be an IPv6 address) → [host, port]. */
function splitAddress(address: string): [string, string] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon).replace(/^\[|\]$/g, ""), address.slice(colon + 1)];
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/** The `text` of a custom-app payload, if it is JSON with one. */
function customText(payload: string): string | undefined {
  try {
    const value = JSON.parse(payload);
    return typeof value?.text === "string" ? value.text : undefined;
  } catch {
    return undefined;
  }
}

test("an AWTRIX 3 clock pairs, connects live, binds to a sign and shows its message", async ({
  page,
  request,
}) => {
  const id = uid();
  const signId = `clock_sign_${id}`;
  const messageId = `m_${id}`;
  const text = `HELLO ${id.slice(-4).toUpperCase()}`;
  await put(request, "signs", signId, { name: `Kitchen ${id}`, width: 32, height: 8, color_depth: "rgb" });
  await put(request, "messages", messageId, { text, effect: "static", duration: 3600 });

  await openDevices(page);
  const form = page.getByTestId("pair-form");
  await form.getByTestId("pair-kind").selectOption("awtrix3");
  // Only WLED is asked its size.
  await expect(form.getByTestId("pair-width")).toHaveCount(0);
  await form.getByTestId("pair-name").fill(`Kitchen clock ${id}`);
  await form.getByTestId("pair-submit").click();

  const card = page.getByTestId("pairing-card");
  await expect(card).toBeVisible();
  const deviceId = (await card.getAttribute("data-device-id"))!;
  expect(deviceId).toBeTruthy();
  const labels = await card
    .getByTestId("pairing-field")
    .evaluateAll((rows) => rows.map((row) => row.getAttribute("data-label")));
  expect(labels).toEqual(["Broker", "Port", "Username", "Password", "Prefix"]);
  const settings = {
    broker: await cardValue(card, "Broker"),
    port: await cardValue(card, "Port"),
    username: await cardValue(card, "Username"),
    password: await cardValue(card, "Password"),
    prefix: await cardValue(card, "Prefix"),
  };
  expect(settings.password.length).toBeGreaterThan(0);
  await expect(card.getByTestId("password-once")).toContainText("shown once");
  await expect(card.getByTestId("pairing-status")).toContainText("Waiting for the device to connect");
  // The new device is listed, offline.
  const row = page.locator(`[data-testid="device-row"][data-device-id="${deviceId}"]`);
  await expect(row.getByTestId("device-status")).toHaveText("offline");

  // The card names the broker's port as this test's server listens on it. Its address is
  // one a device on the network can use; a server listening on loopback only (as in
  // scripts/e2e.sh) must say that no other machine can reach it, and the clock (on this
  // machine) then uses the loopback address.
  const [mqttHost, mqttPort] = splitAddress(process.env.MARQUEE_MQTT || "127.0.0.1:1883");
  expect(settings.port).toBe(mqttPort);
  if (settings.broker !== mqttHost && isLoopback(mqttHost)) {
    await expect(card.getByTestId("broker-warning")).toBeVisible();
    settings.broker = mqttHost;
  }
  const { client, received } = await awtrixClock(settings);
  try {
    // The card sees the clock connect, without a reload.
    await expect(card.getByTestId("pairing-status")).toContainText("connected");
    await expect(card.getByTestId("pairing-status")).toHaveAttribute("data-state", "online");
    await expect(card.getByTestId("pairing-firmware")).toContainText("0.98");
    await expect(card.getByTestId("device-details")).toContainText("192.168.1.50");
    await expect(row.getByTestId("device-status")).toHaveText("online");
    await expect(row.getByTestId("device-firmware")).toContainText("0.98");

    // Bound to the sign from the card.
    await card.getByTestId("bind-select").selectOption(signId);
    await card.getByTestId("bind-button").click();
    await expect
      .poll(async () => (await getRecord(request, "devices", deviceId)).sign)
      .toBe(signId);
    await expect(row.getByTestId("device-sign")).toHaveAttribute("data-sign", signId);

    // On the sign's page the clock is listed, online; a message dropped onto the sign reaches it.
    await page.goto(`/signs/${signId}`);
    await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
    const listed = page.locator(`[data-testid="sign-device"][data-device-id="${deviceId}"]`);
    await expect(listed.getByTestId("device-status")).toHaveText("online");
    const dropped = Date.now();
    await page
      .locator(`[data-testid="library-item"][data-message="${messageId}"]`)
      .dragTo(page.getByTestId("stage"));
    await expect
      .poll(
        () =>
          received.some(
            (r) => r.topic === `${settings.prefix}/custom/marquee` && r.at >= dropped && customText(r.payload) === text,
          ),
        { timeout: 2_000, intervals: [50] },
      )
      .toBe(true);
  } finally {
    await client.endAsync();
  }
});

test("devices are offered to each role as far as it may go", async ({ page, admin, browser, baseURL }) => {
  const id = uid();
  const created = await admin.post("/api/devices/", {
    data: { kind: "wled", name: `Hall matrix ${id}`, width: 48, height: 12 },
  });
  expect(created.status(), await created.text()).toBe(201);
  const deviceId = (await created.json()).id as string;
  const row = (p: Page) => p.locator(`[data-testid="device-row"][data-device-id="${deviceId}"]`);

  // The admin pairs, binds and manages.
  await openDevices(page);
  await expect(page.getByTestId("pair-form")).toBeVisible();
  await expect(row(page).getByTestId("device-size")).toHaveText("48×12");
  await expect(row(page).getByTestId("bind-select")).toBeVisible();
  await expect(row(page).getByTestId("device-remove")).toBeVisible();

  // An editor binds, but does not pair or remove.
  const editor = await createAccount(admin, "editor");
  const editorContext = await browser.newContext({ baseURL, storageState: { cookies: [], origins: [] } });
  const editorPage = await editorContext.newPage();
  await signIn(editorPage, editor.username, editor.password);
  await openDevices(editorPage);
  await expect(row(editorPage).getByTestId("device-status")).toHaveText("offline");
  await expect(editorPage.getByTestId("pair-form")).toHaveCount(0);
  await expect(row(editorPage).getByTestId("device-remove")).toHaveCount(0);
  // A new sign of the device's size, bound in one go.
  await row(editorPage).getByTestId("new-sign-button").click();
  await expect
    .poll(async () => (await getRecord(admin, "devices", deviceId)).sign ?? null)
    .not.toBeNull();
  const signId = (await getRecord(admin, "devices", deviceId)).sign as string;
  const sign = await getRecord(admin, "signs", signId);
  expect([sign.name, sign.width, sign.height]).toEqual([`Hall matrix ${id}`, 48, 12]);
  await expect(row(editorPage).getByTestId("device-sign")).toHaveAttribute("data-sign", signId);
  await editorContext.close();

  // A viewer watches only.
  const viewer = await createAccount(admin, "viewer");
  const viewerContext = await browser.newContext({ baseURL, storageState: { cookies: [], origins: [] } });
  const viewerPage = await viewerContext.newPage();
  await signIn(viewerPage, viewer.username, viewer.password);
  await openDevices(viewerPage);
  await expect(row(viewerPage).getByTestId("device-sign")).toHaveAttribute("data-sign", signId);
  await expect(viewerPage.getByTestId("pair-form")).toHaveCount(0);
  await expect(row(viewerPage).getByTestId("bind-select")).toHaveCount(0);
  await expect(row(viewerPage).getByTestId("unbind-button")).toHaveCount(0);
  await viewerPage.goto(`/signs/${signId}`);
  const listed = viewerPage.locator(`[data-testid="sign-device"][data-device-id="${deviceId}"]`);
  await expect(listed).toBeVisible();
  await expect(listed.getByTestId("unbind-button")).toHaveCount(0);
  await viewerContext.close();

  // The admin unbinds from the sign's page, then removes the device (asked twice).
  await page.goto(`/signs/${signId}`);
  const mine = page.locator(`[data-testid="sign-device"][data-device-id="${deviceId}"]`);
  await mine.getByTestId("unbind-button").click();
  await expect(mine).toHaveCount(0);
  expect((await getRecord(admin, "devices", deviceId)).sign ?? null).toBeNull();
  await openDevices(page);
  await row(page).getByTestId("device-remove").click();
  await expect(row(page).getByTestId("device-remove")).toHaveText("Confirm remove");
  await row(page).getByTestId("device-remove").click();
  await expect(row(page)).toHaveCount(0);
});

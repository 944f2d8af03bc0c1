import * as path from "node:path";
import { type APIRequestContext, type Page, type WebSocketRoute } from "@playwright/test";
import { test, expect, cookieHeader } from "./fixtures";

// Each test works in a table of its own, so tests never see each other's records.
function uniqueName(): string {
  return `e2e_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

async function createTable(request: APIRequestContext): Promise<string> {
  const name = uniqueName();
  const response = await request.post("/api/_tables", { data: { name } });
  expect(response.status(), await response.text()).toBe(201);
  return name;
}

type ChangeEvent = {
  seq?: number;
  type: string;
  table: string;
  id: string;
  version?: number;
  value?: Record<string, unknown>;
};

async function putRecord(
  request: APIRequestContext,
  table: string,
  id: string,
  value: Record<string, unknown>,
): Promise<ChangeEvent> {
  const response = await request.put(`/api/${table}/${id}`, { data: value });
  expect(response.ok(), await response.text()).toBe(true);
  return (await response.json()) as ChangeEvent;
}

/** A Server-Sent Events stream read with Node's fetch, collecting every event. */
class EventStream {
  readonly events: { event: string; data: any }[] = [];
  private readonly abort = new AbortController();
  private closed = false;

  private constructor() {}

  /** `cookie`: the session to watch as (Node's fetch keeps no cookies). */
  static async open(url: string, cookie: string): Promise<EventStream> {
    const stream = new EventStream();
    const response = await fetch(url, {
      headers: { Accept: "text/event-stream", Cookie: cookie },
      signal: stream.abort.signal,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type") ?? "").toContain("text/event-stream");
    void stream.read(response.body!);
    return stream;
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.parse(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (!this.closed) throw error;
    }
  }

  private parse(block: string): void {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // heartbeat comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      if (field === "data") data.push(value);
    }
    if (data.length === 0) return;
    this.events.push({ event, data: JSON.parse(data.join("\n")) });
  }

  close(): void {
    this.closed = true;
    this.abort.abort();
  }
}

function row(page: Page, id: string) {
  return page.locator(`[data-testid="record-row"][data-id="${id}"]`);
}

async function openTable(page: Page, table: string): Promise<void> {
  await page.goto(`/data?table=${table}`);
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await expect(page.getByTestId("table-select")).toHaveValue(table);
}

test("records written elsewhere appear live; edits in the page reach SSE; bad JSON is refused", async ({
  page,
  request,
  baseURL,
}) => {
  const table = await createTable(request);
  const sentPuts: string[] = [];
  page.on("websocket", (socket) => {
    socket.on("framesent", (frame) => {
      const text = String(frame.payload);
      if (text.includes('"type":"put"')) sentPuts.push(text);
    });
  });
  await openTable(page, table);

  // A write over REST shows up without a reload.
  const created = await putRecord(request, table, "hello", { text: "hello", n: 1 });
  expect(created.version).toBeGreaterThan(0);
  const hello = row(page, "hello");
  await expect(hello).toHaveAttribute("data-version", String(created.version));
  await expect(hello.getByTestId("record-value")).toContainText('"text":"hello"');

  // Watch the record over SSE before editing it: the first event is its current state.
  const stream = await EventStream.open(`${baseURL}/api/${table}/hello`, await cookieHeader(request));
  try {
    await expect
      .poll(() => stream.events.find((e) => e.data?.id === "hello")?.data?.value?.text)
      .toBe("hello");

    await hello.getByTestId("record-edit").click();
    const editor = page.getByTestId("record-editor");
    await expect(editor).toHaveValue(/"text": "hello"/);
    await editor.fill('{"text": "edited in the browser", "n": 2}');
    await page.getByTestId("record-save").click();

    await expect
      .poll(() =>
        stream.events.some(
          (e) => e.data?.id === "hello" && e.data?.value?.text === "edited in the browser",
        ),
      )
      .toBe(true);
    const edit = stream.events.find((e) => e.data?.value?.text === "edited in the browser")!;
    // Unnamed, so a plain EventSource.onmessage gets it; the type is in the data.
    expect(edit.event).toBe("message");
    expect(edit.data.type).toBe("put");
    expect(edit.data.origin).toBe("ws");
    expect(edit.data.version).toBe(created.version! + 1);
  } finally {
    stream.close();
  }
  const editedVersion = String(created.version! + 1);
  await expect(hello).toHaveAttribute("data-version", editedVersion);
  await expect(hello.getByTestId("record-value")).toContainText('"text":"edited in the browser"');

  // Invalid JSON: an error beside the editor, nothing sent, nothing changed.
  const putsBefore = sentPuts.length;
  expect(putsBefore).toBe(1);
  const editor = page.getByTestId("record-editor");
  await editor.fill('{"text": "broken",');
  await page.getByTestId("record-save").click();
  const error = page.locator('[data-testid="error"][data-for="editor"]');
  await expect(error).toBeVisible();
  await expect(error).toContainText("not valid JSON");
  await expect(editor).toHaveValue('{"text": "broken",');
  expect(sentPuts.length).toBe(putsBefore);
  const current = await request.get(`/api/${table}/hello`);
  expect(current.status()).toBe(200);
  const body = await current.json();
  expect(JSON.stringify(body)).toContain("edited in the browser");
  await expect(hello).toHaveAttribute("data-version", editedVersion);

  await page.screenshot({ path: path.join(__dirname, "..", "test-results", "data.png"), fullPage: true });
});

test("the new-record form creates, the delete button deletes", async ({ page, request }) => {
  const table = await createTable(request);
  await openTable(page, table);

  // Not an object: refused in the page.
  await page.getByTestId("new-id").fill("lamp");
  await page.getByTestId("new-value").fill("[1, 2]");
  await page.getByTestId("new-create").click();
  await expect(page.locator('[data-testid="error"][data-for="new"]')).toContainText("JSON object");

  await page.getByTestId("new-value").fill('{"on": true}');
  await page.getByTestId("new-create").click();
  const lamp = row(page, "lamp");
  await expect(lamp).toHaveAttribute("data-version", /^[1-9]\d*$/);
  await expect(lamp.getByTestId("record-value")).toHaveText('{"on":true}');
  await expect(page.getByTestId("new-id")).toHaveValue("");
  const stored = await request.get(`/api/${table}/lamp`);
  expect(stored.status()).toBe(200);
  expect(JSON.stringify(await stored.json())).toContain('"on":true');

  // An id that exists is not overwritten by the create form.
  await page.getByTestId("new-id").fill("lamp");
  await page.getByTestId("new-value").fill('{"on": false}');
  await page.getByTestId("new-create").click();
  await expect(page.locator('[data-testid="error"][data-for="new"]')).toContainText("already exists");

  // Delete asks for a second click.
  const remove = lamp.getByTestId("record-delete");
  await remove.click();
  await expect(remove).toHaveText("Confirm delete");
  await remove.click();
  await expect(lamp).toHaveCount(0);
  await expect.poll(async () => (await request.get(`/api/${table}/lamp`)).status()).toBe(404);
});

test("the page reconnects after a drop and resumes where it stopped", async ({ page, request }) => {
  const table = await createTable(request);
  const sockets: WebSocketRoute[] = [];
  const subscribes: { req: string; filter: string; since?: number | null }[] = [];
  await page.routeWebSocket(/\/api\/ws$/, (socket) => {
    const server = socket.connectToServer();
    sockets.push(socket);
    socket.onMessage((message) => {
      const parsed = JSON.parse(String(message));
      if (parsed.type === "subscribe") subscribes.push(parsed);
      server.send(message);
    });
  });
  await openTable(page, table);
  await putRecord(request, table, "before", { n: 1 });
  await expect(row(page, "before")).toHaveCount(1);
  expect(subscribes).toHaveLength(1);
  expect(subscribes[0].filter).toBe(`${table}/+`);
  expect(subscribes[0].since ?? null).toBeNull(); // a fresh subscribe: the whole current state

  // Cut the connection: the indicator says so, then the page comes back by itself.
  await sockets[0].close({ code: 1011, reason: "test drop" });
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "down");
  await expect(page.getByTestId("live-status")).toContainText("reconnecting");
  await putRecord(request, table, "during", { n: 2 });

  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
  await expect(row(page, "during")).toHaveCount(1);
  await expect(row(page, "before")).toHaveCount(1);
  expect(subscribes.length).toBeGreaterThanOrEqual(2);
  expect(typeof subscribes[1].since).toBe("number");

  // And it is live again for later writes too.
  await putRecord(request, table, "after", { n: 3 });
  await expect(row(page, "after")).toHaveCount(1);
});

test("the home page links to the data explorer", async ({ page }) => {
  await page.goto("/");
  await expect(page.locator("h1")).toHaveText("Your signs");
  await page.getByRole("navigation").getByRole("link", { name: "Data", exact: true }).click();
  await expect(page).toHaveURL(/\/data$/);
  await expect(page.getByTestId("live-status")).toHaveAttribute("data-state", "live");
});

test("a plain browser EventSource with onmessage receives the state and every change", async ({
  page,
  request,
}) => {
  const table = await createTable(request);
  await putRecord(request, table, "first", { n: 1 });
  await page.goto("/");
  // As tutorials write it: onmessage only, and a listener for the named sync event.
  await page.evaluate((table) => {
    const w = window as any;
    w.received = [];
    w.synced = false;
    const source = new EventSource(`/api/${table}/`);
    source.onmessage = (e: MessageEvent) => w.received.push({ id: e.lastEventId, data: JSON.parse(e.data) });
    source.addEventListener("sync", () => (w.synced = true));
    w.source = source;
  }, table);
  await expect.poll(() => page.evaluate(() => (window as any).synced)).toBe(true);
  const created = await putRecord(request, table, "second", { n: 2 });
  await expect.poll(() => page.evaluate(() => (window as any).received.length)).toBe(2);
  const received = await page.evaluate(() => (window as any).received);
  expect(received[0].data).toMatchObject({ type: "put", id: "first", value: { n: 1 } });
  expect(received[1].data).toMatchObject({ type: "put", id: "second", value: { n: 2 } });
  expect(received[1].id).toBe(String(created.seq));
  await page.evaluate(() => (window as any).source.close());
});

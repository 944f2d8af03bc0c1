// Prints what each page of the web app makes a browser download, in WASM:
// the main bundle plus the split files its route needs (from the manifest
// `cargo leptos build --split` writes), as the server sends them precompressed.
// Sign-in, setup, account and admin share one split module (`account_pages`):
// each of the four rows is that whole module.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const pkg = process.argv[2] ?? "target/site/pkg";
const size = (file) => statSync(join(pkg, file)).size;
const kb = (bytes) => `${(bytes / 1000).toFixed(0)} KB`;
const manifest = JSON.parse(readFileSync(join(pkg, "__wasm_split_manifest.json"), "utf8"));

const files = (chunks) => ["marquee", ...chunks].map((chunk) => `${chunk}.wasm`);
const row = (label, wasm) =>
  console.log(
    `${label.padEnd(16)} ${kb(wasm.reduce((n, f) => n + size(f), 0)).padStart(8)} raw` +
      ` ${kb(wasm.reduce((n, f) => n + size(`${f}.gz`), 0)).padStart(8)} gzip` +
      ` ${kb(wasm.reduce((n, f) => n + size(`${f}.br`), 0)).padStart(8)} brotli`,
  );

console.log("WASM a browser downloads per page (main bundle + that page's split files):");
row("main only", files([]));
const pages = Object.entries(manifest).flatMap(([route, chunks]) =>
  route === "account_pages"
    ? ["account", "admin", "login", "setup"].map((page) => [page, chunks])
    : [[route.replace(/^__(\w+?)_route_view_\d+$/, "$1"), chunks]],
);
for (const [page, chunks] of pages.sort()) {
  row(page, files(chunks));
}

# Marquee — the two commands a new machine needs:
#   make run    set up what is missing, build a release, start Marquee on ./data
#   make test   set up what is missing, run every test (Rust, then the browser)

CARGO_LEPTOS_VERSION := 0.3.10
WASM_BINDGEN_VERSION := $(shell sed -n '/^name = "wasm-bindgen"$$/{n;s/version = "\(.*\)"/\1/p;}' Cargo.lock)
DATA_DIR ?= ./data
HTTP ?= 127.0.0.1:3000
MQTT ?= 127.0.0.1:1883

export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: run test setup setup-rust setup-apt setup-npm build test-rust lint test-e2e bench soak clean

run: setup build
	@echo "Starting Marquee (data in $(DATA_DIR)); Ctrl-C stops it."
	./target/release/marquee --data-dir $(DATA_DIR) --http $(HTTP) --mqtt $(MQTT)

test: setup lint test-rust build test-e2e

setup: setup-apt setup-rust setup-npm

# Debian packages the tests drive: a real browser, outside MQTT clients,
# strace (the crash test checks that every acknowledgement follows an fsync),
# etcd (the scale-out tests start their own members) and protoc (the
# etcd-client crate compiles etcd's .proto files when it builds).
setup-apt:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v mosquitto_sub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The wasm target, and pinned cargo-leptos / wasm-bindgen-cli (built from crates.io, never downloaded).
setup-rust:
	@rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@if [ "$$(cargo leptos --version 2>/dev/null | awk '{print $$2}')" != "$(CARGO_LEPTOS_VERSION)" ]; then \
		echo "Installing cargo-leptos $(CARGO_LEPTOS_VERSION) (about 20 minutes the first time)"; \
		cargo install --locked cargo-leptos --version $(CARGO_LEPTOS_VERSION); \
	fi
	@if [ "$$(wasm-bindgen --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
		echo "Installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION)"; \
		cargo install --locked wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi

# wasm-opt (npm binaryen) for release builds, Playwright for the browser tests.
setup-npm:
	@[ -x node_modules/.bin/wasm-opt ] || npm ci --no-audit --no-fund
	@[ -d end2end/node_modules/@playwright/test ] && [ -d end2end/node_modules/mqtt ] || (cd end2end && npm ci --no-audit --no-fund)

# The server binary plus the hydrating WASM bundle, CSS and assets in target/site.
# --split: each page's code is its own file, fetched when the page is first shown.
# cargo-leptos gzips at its fastest level; browsers without brotli get -9.
build:
	cargo leptos build --release --precompress --split
	for f in target/site/pkg/*.wasm target/site/pkg/*.js; do gzip -9 -n -k -f "$$f"; done
	node scripts/bundle-sizes.mjs

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Rust unit and integration tests (the server and the shared app crate), then
# the protocol suites again against two Marquee nodes sharing one etcd
# cluster that scripts/on-etcd.sh starts for them (and stops after), each
# client connection dealt to one node in turn by a proxy, as a load balancer
# would (MARQUEE_TEST_NODES=2; tests of per-node behaviour run one node).
ETCD_SUITES := access admin auth devices mosquitto_clients mqtt mqtt_fuzz mqtt_interop mqtt_matrix rest signs streams
test-rust:
	cargo test -p marquee -p app
	MARQUEE_TEST_NODES=2 scripts/on-etcd.sh cargo test -p marquee $(addprefix --test ,$(ETCD_SUITES))

# Browser tests against the release build, on a free port with a fresh data dir.
test-e2e:
	scripts/e2e.sh

# Throughput and latency figures for this machine (see BENCHMARKS.md). Data goes
# under target/bench-data/ (a real disk), not a possibly-tmpfs /tmp. The peer
# bench compares with Harper (npm harperdb), installed under target/harper/, untracked.
# The scale bench starts its own 3-member etcd clusters (Debian's etcd-server,
# from `make setup`); without etcd it measures the embedded store alone.
HARPER_VERSION := 4.7.29
bench:
	@command -v mosquitto >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get install -y -qq mosquitto; }
	@[ -f target/harper/node_modules/harperdb/package.json ] || npm install --prefix target/harper --no-audit --no-fund harperdb@$(HARPER_VERSION)
	cargo bench -p marquee --bench core --bench mqtt --bench memory --bench peer --bench scale

# A bounded soak of the release build: mixed REST/WS/MQTT load for SOAK_MINUTES
# (default 30; e.g. SOAK_MINUTES=2 make soak), RSS every minute, and a non-zero
# exit if any subscriber missed or duplicated a change. Not part of `make test`.
SOAK_MINUTES ?= 30
soak:
	cargo build --release -p marquee --bin marquee
	SOAK_MINUTES=$(SOAK_MINUTES) cargo bench -p marquee --bench soak

clean:
	cargo clean

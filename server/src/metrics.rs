//! Process-wide counters and histograms, rendered as Prometheus text at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The protocols Marquee speaks, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Sse,
    Ws,
    Mqtt,
}

impl Protocol {
    const ALL: [Protocol; 4] = [Protocol::Rest, Protocol::Sse, Protocol::Ws, Protocol::Mqtt];

    fn label(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Sse => "sse",
            Protocol::Ws => "ws",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// One value per protocol, looked up without indexing.
#[derive(Default)]
struct PerProtocol<T> {
    rest: T,
    sse: T,
    ws: T,
    mqtt: T,
}

impl<T> std::ops::Index<Protocol> for PerProtocol<T> {
    type Output = T;

    fn index(&self, protocol: Protocol) -> &T {
        match protocol {
            Protocol::Rest => &self.rest,
            Protocol::Sse => &self.sse,
            Protocol::Ws => &self.ws,
            Protocol::Mqtt => &self.mqtt,
        }
    }
}

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed upper bounds (the last bucket is `+Inf`).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    open_connections: PerProtocol<AtomicI64>,
    connections: PerProtocol<Counter>,
    messages_in: PerProtocol<Counter>,
    messages_out: PerProtocol<Counter>,
    pub write_latency: Histogram,
    pub commit_batch: Histogram,
    pub commits: Counter,
    /// Commits made on a writing connection's own thread while the writer was idle.
    pub inline_commits: Counter,
    pub changes: Counter,
    pub bus_cutoffs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            open_connections: Default::default(),
            connections: Default::default(),
            messages_in: Default::default(),
            messages_out: Default::default(),
            write_latency: Histogram::new(&[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            commit_batch: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0]),
            commits: Counter::default(),
            inline_commits: Counter::default(),
            changes: Counter::default(),
            bus_cutoffs: Counter::default(),
        }
    }
}

/// Counts a connection as open until dropped.
pub struct ConnectionGuard<'a> {
    metrics: &'a Metrics,
    protocol: Protocol,
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.metrics.open_connections[self.protocol].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn connection(&self, protocol: Protocol) -> ConnectionGuard<'_> {
        self.open_connections[protocol].fetch_add(1, Ordering::Relaxed);
        self.connections[protocol].inc();
        ConnectionGuard {
            metrics: self,
            protocol,
        }
    }

    pub fn message_in(&self, protocol: Protocol) {
        self.messages_in[protocol].inc();
    }

    pub fn message_out(&self, protocol: Protocol) {
        self.messages_out[protocol].inc();
    }

    /// Messages received and sent so far on `protocol`.
    pub fn messages(&self, protocol: Protocol) -> (u64, u64) {
        (
            self.messages_in[protocol].get(),
            self.messages_out[protocol].get(),
        )
    }

    pub fn render(&self, last_seq: u64, subscribers: usize) -> String {
        let mut out = String::with_capacity(4096);
        let per_protocol = |out: &mut String,
                            name: &str,
                            help: &str,
                            kind: &str,
                            get: &dyn Fn(Protocol) -> i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for p in Protocol::ALL {
                let _ = writeln!(out, "{name}{{protocol=\"{}\"}} {}", p.label(), get(p));
            }
        };
        per_protocol(
            &mut out,
            "marquee_connections_open",
            "Connections open now.",
            "gauge",
            &|p| self.open_connections[p].load(Ordering::Relaxed),
        );
        per_protocol(
            &mut out,
            "marquee_connections_total",
            "Connections accepted.",
            "counter",
            &|p| self.connections[p].get() as i64,
        );
        per_protocol(
            &mut out,
            "marquee_messages_in_total",
            "Requests and messages received.",
            "counter",
            &|p| self.messages_in[p].get() as i64,
        );
        per_protocol(
            &mut out,
            "marquee_messages_out_total",
            "Events and messages sent.",
            "counter",
            &|p| self.messages_out[p].get() as i64,
        );
        self.write_latency.render(
            &mut out,
            "marquee_write_latency_seconds",
            "Time from a write being queued to its durable commit.",
        );
        self.commit_batch.render(
            &mut out,
            "marquee_commit_batch_size",
            "Writes made durable by one fsync.",
        );
        let mut scalar = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        scalar(
            "marquee_commits_total",
            "Group commits (fsyncs).",
            "counter",
            self.commits.get(),
        );
        scalar(
            "marquee_inline_commits_total",
            "Of those, commits made by the writing connection itself while the writer was idle.",
            "counter",
            self.inline_commits.get(),
        );
        scalar(
            "marquee_changes_total",
            "Changes committed since start.",
            "counter",
            self.changes.get(),
        );
        scalar(
            "marquee_bus_cutoffs_total",
            "Subscribers cut off for falling behind.",
            "counter",
            self.bus_cutoffs.get(),
        );
        scalar(
            "marquee_last_seq",
            "Sequence number of the last committed change.",
            "gauge",
            last_seq,
        );
        scalar(
            "marquee_bus_subscribers",
            "Subscribers on the change bus.",
            "gauge",
            subscribers as u64,
        );
        out
    }
}

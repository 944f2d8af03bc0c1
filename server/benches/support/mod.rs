//! What the benchmarks share: the release `marquee` binary started on
//! loopback ports with a fresh data directory, a process's CPU time, the
//! load generators (closed-loop REST writers, open-loop paced writes), an SSE
//! subscriber timing deliveries, and (`etcd`) a 3-member etcd to run it on.

// Each benchmark uses part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

// The tests' cluster harness, one copy for both (not every bench uses all of it).
#[allow(dead_code)]
#[path = "../../tests/common/etcd.rs"]
pub mod etcd;

/// A running `marquee`, killed when dropped.
pub struct Marquee {
    pub child: Child,
    /// `http://ADDR`
    pub url: String,
    pub mqtt: SocketAddr,
}

impl Drop for Marquee {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Marquee {
    /// In `open` mode (no accounts), as the outside suites run.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &["--auth-mode", "open"], &[])
    }

    /// With these extra arguments (`--auth-mode …`) and environment
    /// (`MARQUEE_ADMIN_PASSWORD`). `MARQUEE_BENCH_BINARY` names another build
    /// to measure instead of this one (e.g. the last commit's, to compare).
    pub fn start_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let binary = std::env::var_os("MARQUEE_BENCH_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_marquee").into());
        let mut child = Command::new(binary)
            .arg("--data-dir")
            .arg(dir)
            .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start marquee");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address line");
        let word = |prefix: &str| {
            line.split_whitespace()
                .find(|w| w.starts_with(prefix))
                .map(|w| w.trim_end_matches([',', ')']).to_owned())
        };
        let url = word("http://").expect("HTTP address");
        let mqtt = word("mqtt://")
            .and_then(|w| w.trim_start_matches("mqtt://").parse().ok())
            .expect("MQTT address");
        Self { child, url, mqtt }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time (user + system) a process has used so far.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports in clock ticks of 1/100 s.
    Duration::from_millis((field(11) + field(12)) * 10)
}

/// Where a benchmark keeps its data: `target/bench-data/<name>-<pid>`, on the
/// same filesystem as the build (a real disk here; `/tmp` may be tmpfs, where
/// fsync is free). Removed when dropped.
pub struct BenchDir(pub std::path::PathBuf);

impl BenchDir {
    pub fn new(name: &str) -> Self {
        // CARGO_BIN_EXE_marquee is <target>/release/marquee.
        let target = Path::new(env!("CARGO_BIN_EXE_marquee"))
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let dir = target
            .join("bench-data")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench data dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The filesystem type of `path` (`ext2/ext3` is how `stat` names ext4, `tmpfs`, …).
pub fn fs_type(path: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The mount (device, filesystem) `path` lives on, from /proc/mounts: the
/// longest mount point that is a prefix of it.
pub fn mount_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {} type {}", f[0], f[1], f[2])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, m)| m)
        .unwrap_or_else(|| "unknown mount".into())
}

/// Writes 4 KiB and fdatasyncs it, `n` times, in a file under `dir`; returns
/// (median, p99).
pub fn fsync_probe(dir: &Path, n: usize) -> (Duration, Duration) {
    use std::io::{Seek, Write};
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = [0x5a_u8; 4096];
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        // Overwrite a few blocks in turn, so every sync has data to flush.
        let _ = file.seek(std::io::SeekFrom::Start((i % 16) as u64 * 4096));
        let started = std::time::Instant::now();
        file.write_all(&block).expect("probe write");
        file.sync_data().expect("fdatasync");
        times.push(started.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_unstable();
    let pick = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (pick(0.5), pick(0.99))
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Prints where the data lives, the filesystem, a measured fsync and the load:
/// the figures that follow only mean something next to these.
pub fn print_environment(dir: &Path) {
    let (p50, p99) = fsync_probe(dir, 200);
    println!(
        "data in {} ({}; stat -f: {})",
        dir.display(),
        mount_of(dir),
        fs_type(dir)
    );
    println!(
        "fsync (4 KiB write + fdatasync, 200 times): median {:.2} ms   p99 {:.2} ms",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0
    );
    println!(
        "cores {}   load average (1/5/15 min) {}  -- other work on the machine makes timing figures noisy",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
}

/// A process's resident set size in KiB (VmRSS), 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/PID/status` field in KiB (`VmHWM:` is the peak RSS), 0 if absent.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Microseconds since `base`.
pub fn now_us(base: std::time::Instant) -> u64 {
    base.elapsed().as_micros() as u64
}

/// An MQTT 3.1.1 subscriber's arrivals: reads publishes from `stream` (already
/// subscribed; `buf` holds what was read past the SUBACK) until `count` have
/// come, 60 s pass or the broker is quiet for 10 s. `arrived` turns each
/// publish and its arrival time (µs after `base`) into what is counted, or
/// `None` for publishes that are not.
pub async fn mqtt_arrivals<T>(
    mut stream: tokio::net::TcpStream,
    mut buf: bytes::BytesMut,
    count: usize,
    base: std::time::Instant,
    arrived: impl Fn(&marquee::mqtt::Publish, u64) -> Option<T>,
) -> Vec<T> {
    use marquee::mqtt::{Packet, ProtocolVersion, decode_as_client};
    use tokio::io::AsyncReadExt;
    let mut latencies = Vec::with_capacity(count);
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < give_up && latencies.len() < count {
        while let Ok(Some(packet)) = decode_as_client(&mut buf, ProtocolVersion::V311, 1 << 20) {
            if let Packet::Publish(p) = packet
                && let Some(counted) = arrived(&p, now_us(base))
            {
                latencies.push(counted);
            }
        }
        if latencies.len() >= count {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    latencies
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A bare HTTP/1.1 keep-alive client: the load generator shares the machine's
/// cores with the server, so it should cost as little as possible.
pub struct RawHttp {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
    /// Header lines (each ending in CRLF) sent with every request, e.g. a
    /// peer server's `Authorization`.
    extra_headers: String,
}

impl RawHttp {
    pub async fn connect(addr: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: tokio::io::BufReader::new(stream),
            host: addr.to_owned(),
            extra_headers: String::new(),
        }
    }

    /// Sends `name: value` with every request from now on.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    /// Sends a PUT and reads the whole response; returns its status.
    pub async fn put(&mut self, path: &str, body: &str) -> u16 {
        self.request("PUT", path, body).await
    }

    /// Sends a request with a JSON body and reads the whole response; returns its status.
    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> u16 {
        let request = self.encode(method, path, body);
        self.send(request.as_bytes()).await;
        self.read_response().await
    }

    /// One request's bytes (several may go in one write: HTTP/1.1 pipelining).
    pub fn encode(&self, method: &str, path: &str, body: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.extra_headers,
            body.len()
        )
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.reader.get_mut().write_all(bytes).await.expect("send");
    }

    /// Reads one whole response; returns its status.
    pub async fn read_response(&mut self) -> u16 {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.expect("body");
        status
    }
}

/// Open-loop HTTP writes: write `i` is due at `start_us + i * period_us`
/// (µs after `base`) and is sent then, whether or not earlier writes were
/// answered. A timing thread writes each request straight onto one of
/// `connections` keep-alive sockets (round robin, so a slow answer is not in
/// the next write's way) and a reader thread per socket takes the answers: no
/// hand-off to an async runtime sits between the schedule and the wire, so
/// what the figures show is the server, not the load generator waking up
/// (tokio's timer also wakes on whole milliseconds, up to 1 ms late; the
/// thread sleeps with the OS's microseconds).
pub struct PacedWrites {
    /// Where and how: `127.0.0.1:PORT` and extra header lines (each ending in CRLF).
    pub addr: String,
    pub extra_headers: String,
    pub connections: usize,
    pub base: std::time::Instant,
    pub start_us: u64,
    pub period_us: u64,
    pub count: usize,
}

/// What the load generator saw of its own writes.
pub struct PacedOutcome {
    /// How far the timing thread fell behind its schedule, at most.
    pub late: Duration,
    /// Writes answered with something other than 2xx, or not at all.
    pub failed: usize,
    /// Each answered write's time from sending to its answer, sorted.
    pub acks: Vec<Duration>,
    /// Each 2xx answer as (began sending, answered), µs after `base`, in
    /// answer order: where acknowledgements stopped, and which write waited.
    pub answers: Vec<(u64, u64)>,
}

impl PacedWrites {
    /// Sends every write (`request(i, due_us)` gives its method, path and
    /// body) and waits for every answer, for at most 60 s after the last.
    pub fn run(
        self,
        request: impl Fn(u64, u64) -> (&'static str, String, String) + Send + 'static,
    ) -> PacedOutcome {
        use std::io::Write;
        let mut sockets = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..self.connections.max(1) {
            let stream = std::net::TcpStream::connect(&self.addr).expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .expect("read timeout");
            let (sent_tx, sent_rx) = std::sync::mpsc::channel::<u64>();
            let reader = stream.try_clone().expect("clone socket");
            let base = self.base;
            readers.push(std::thread::spawn(move || {
                read_answers(std::io::BufReader::new(reader), sent_rx, base)
            }));
            sockets.push((stream, sent_tx));
        }
        let mut late = Duration::ZERO;
        let mut unsent = 0;
        for i in 0..self.count as u64 {
            let due_us = self.start_us + i * self.period_us;
            let due = self.base + Duration::from_micros(due_us);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            late = late.max(std::time::Instant::now().saturating_duration_since(due));
            let (method, path, body) = request(i, due_us);
            let bytes = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.addr,
                self.extra_headers,
                body.len()
            );
            let (socket, sent) = &mut sockets[i as usize % self.connections.max(1)];
            let began = now_us(self.base);
            if socket.write_all(bytes.as_bytes()).is_err() || sent.send(began).is_err() {
                unsent += 1;
            }
        }
        // Closing the queues tells each reader how many answers to expect.
        let sockets: Vec<_> = sockets.into_iter().map(|(socket, _)| socket).collect();
        let mut answers = Vec::with_capacity(self.count);
        let mut failed = unsent;
        for reader in readers {
            let (ok, bad) = reader.join().unwrap_or_default();
            answers.extend(ok);
            failed += bad;
        }
        drop(sockets);
        answers.sort_unstable_by_key(|&(_, answered)| answered);
        let mut acks: Vec<Duration> = answers
            .iter()
            .map(|&(began, answered)| Duration::from_micros(answered.saturating_sub(began)))
            .collect();
        acks.sort_unstable();
        PacedOutcome {
            late,
            failed,
            acks,
            answers,
        }
    }
}

/// Reads one answer per send time queued on `sent`, in order; returns the
/// 2xx answers' (send, answer) times and the count of the others (or of
/// those never read).
fn read_answers(
    mut reader: std::io::BufReader<std::net::TcpStream>,
    sent: std::sync::mpsc::Receiver<u64>,
    base: std::time::Instant,
) -> (Vec<(u64, u64)>, usize) {
    use std::io::{BufRead, Read};
    let (mut acks, mut failed) = (Vec::new(), 0);
    let mut line = String::new();
    let mut broken = false;
    for began in sent {
        line.clear();
        // After a lost answer the socket is out of step: count the rest as failed.
        if broken || reader.read_line(&mut line).unwrap_or(0) == 0 {
            broken = true;
            failed += 1;
            continue;
        }
        let ok = line
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('2'));
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let read = reader.read_exact(&mut body).is_ok();
        broken = !read;
        if ok && read {
            acks.push((began, now_us(base)));
        } else {
            failed += 1;
        }
    }
    (acks, failed)
}

/// `writers` closed-loop writers on keep-alive connections, writer `w` on
/// `addrs[w % addrs.len()]` (`127.0.0.1:PORT`), for `phase` (and at most a
/// million writes each). Each sends `depth` requests at once (HTTP/1.1
/// pipelining when > 1) and then reads their answers, so with depth the load
/// generator's own cost per write shrinks. Writer `w` puts to
/// `/api/{table}/w{w}-{i % 64}`: 64 keys of its own. Returns every write's
/// ack latency, unsorted, and how long the phase took. Panics on a non-2xx
/// answer: these phases measure a healthy server.
pub async fn rest_writers(
    addrs: &[String],
    table: &str,
    writers: usize,
    depth: usize,
    phase: Duration,
) -> (Vec<Duration>, Duration) {
    let deadline = Instant::now() + phase;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let addr = addrs[w % addrs.len()].clone();
            let table = table.to_owned();
            tokio::spawn(async move {
                let mut connection = RawHttp::connect(&addr).await;
                let mut latencies = Vec::new();
                let mut i = 0u64;
                let mut batch = String::new();
                while Instant::now() < deadline && i < 1_000_000 {
                    batch.clear();
                    for _ in 0..depth {
                        let body = json!({"writer": w, "i": i, "text": "Hello, lobby"}).to_string();
                        batch.push_str(&connection.encode(
                            "PUT",
                            &format!("/api/{table}/w{w}-{}", i % 64),
                            &body,
                        ));
                        i += 1;
                    }
                    let sent = Instant::now();
                    connection.send(batch.as_bytes()).await;
                    for _ in 0..depth {
                        let status = connection.read_response().await;
                        assert!((200..300).contains(&status), "write failed: {status}");
                        latencies.push(sent.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    (latencies, started.elapsed())
}

/// The scheduled send time (`sched_us`) of a delivered record of this phase.
pub fn scheduled(value: &Value, phase: u64) -> Option<u64> {
    (value["phase"].as_u64() == Some(phase))
        .then(|| value["sched_us"].as_u64())
        .flatten()
}

/// When the load generator actually began sending the record (`sent_us`):
/// the gap from [`scheduled`] is the generator's own lateness.
pub fn began(value: &Value) -> Option<u64> {
    value["sent_us"].as_u64()
}

/// Each delivery's delay from the scheduled send time, and from the moment
/// the generator began sending it (which leaves out the generator's lateness).
pub type Arrivals = tokio::task::JoinHandle<Vec<(Duration, Duration)>>;

pub fn arrival(now: u64, scheduled: u64, began: u64) -> (Duration, Duration) {
    (
        Duration::from_micros(now.saturating_sub(scheduled)),
        Duration::from_micros(now.saturating_sub(began)),
    )
}

/// An SSE subscriber to `/api/latency/` on `url`, counting the records of
/// `phase` (see [`scheduled`]) until `count` have come, 60 s pass or the
/// stream is quiet for 10 s.
pub async fn sse_subscriber(url: &str, base: Instant, phase: u64, count: usize) -> Arrivals {
    let response = reqwest::Client::new()
        .get(format!("{url}/api/latency/"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE");
    let mut body = response.bytes_stream();
    tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count);
        let mut buffer = String::new();
        let give_up = Instant::now() + Duration::from_secs(60);
        while Instant::now() < give_up && latencies.len() < count {
            let Ok(Some(Ok(chunk))) =
                tokio::time::timeout(Duration::from_secs(10), body.next()).await
            else {
                break;
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                // Changes are unnamed events with an `id:`; state events have none.
                if block.lines().any(|l| l.starts_with("event:"))
                    || !block.lines().any(|l| l.starts_with("id:"))
                {
                    continue;
                }
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:"))
                    && let Ok(event) = serde_json::from_str::<Value>(data.trim_start())
                    && let Some(sent) = scheduled(&event["value"], phase)
                {
                    let began = began(&event["value"]).unwrap_or(sent);
                    latencies.push(arrival(now_us(base), sent, began));
                }
            }
        }
        latencies
    })
}

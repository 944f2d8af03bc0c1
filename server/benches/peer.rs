//! `make bench`: Marquee side by side with Harper 4.7.29 (issue 13's peer),
//! measured the same way in one run, one server after the other with nothing
//! else of ours running:
//! - REST PUT to one record (`Sensors/bench1`) with 1 and 50 keep-alive
//!   clients: writes/s, ack p50/p99, the server's CPU-seconds and writes per
//!   server CPU-second (the figure that holds on a shared machine);
//! - PUT → MQTT subscriber delivery (topic `Sensors/bench1`, QoS 0), open loop
//!   at 100 writes/s, measured from each write's scheduled send time;
//! - RSS idle, peak (VmHWM) and 5 s after, summed over the server's process tree;
//! - whether each server's PUT acknowledgement follows an fsync (checked with
//!   `strace` when it is installed), since a comparison of unlike durability
//!   must say so;
//!
//! then one ratio line per figure next to issue 13's aim (> 1 = Marquee better).
//!
//! Harper is the npm package `harperdb@4.7.29`, which `make bench` installs into
//! `target/harper/` (outside the tracked tree). It is installed and started
//! non-interactively with its data under `target/bench-data/`, on ports picked
//! here, with the `Sensors` table declared by a component's `schema.graphql`.
//! If it cannot be started the bench says why and still prints Marquee's figures.
//!
//! Every loop is bounded in count and time; nothing here asserts a figure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

mod support;
use support::{
    BenchDir, Marquee, PacedWrites, RawHttp, load_average, mqtt_arrivals, now_us, percentile,
    print_environment, process_cpu, rss_kib, status_kib,
};

/// How long each REST throughput phase runs.
const THROUGHPUT_PHASE: Duration = Duration::from_secs(5);
/// Open-loop delivery: 10 s at 100 writes/s.
const DELIVERY_RATE: u64 = 100;
const DELIVERY_WRITES: usize = 1000;
/// Between a server being ready and its idle RSS being read.
const SETTLE: Duration = Duration::from_secs(3);
/// Between the last load and the "after" RSS.
const AFTER: Duration = Duration::from_secs(5);
/// Harper's install and start (a Node.js process loading ~40 MB of code, on a
/// machine other builds share) get this long each before the bench gives up on it.
const HARPER_START: Duration = Duration::from_secs(180);

const HARPER_VERSION: &str = "4.7.29";
const HARPER_USER: &str = "bench";
const HARPER_PASSWORD: &str = "bench-password-1";
/// The one record every phase writes, and its MQTT topic on both servers.
const TABLE: &str = "Sensors";
const RECORD: &str = "bench1";

/// One server under test, as its clients reach it.
struct Peer {
    name: &'static str,
    /// `127.0.0.1:PORT`
    http: String,
    /// The REST path of [`RECORD`].
    record_path: String,
    /// User and password for HTTP Basic and MQTT CONNECT, where the server wants them.
    login: Option<(String, String)>,
    mqtt: SocketAddr,
    /// The server's root process; its children are counted with it.
    pid: u32,
}

impl Peer {
    fn authorization(&self) -> Option<String> {
        self.login.as_ref().map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        })
    }

    async fn connect_http(&self) -> RawHttp {
        let http = RawHttp::connect(&self.http).await;
        match self.authorization() {
            Some(value) => http.with_header("Authorization", &value),
            None => http,
        }
    }
}

struct Throughput {
    writes: usize,
    failed: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
    cpu: Duration,
}

impl Throughput {
    fn per_cpu_second(&self) -> f64 {
        self.writes as f64 / self.cpu.as_secs_f64().max(0.001)
    }
}

struct Delivery {
    p50: Duration,
    p99: Duration,
    max: Duration,
    delivered: usize,
}

/// Everything measured of one server; `None` where a phase could not run.
struct Figures {
    put_1: Throughput,
    put_50: Throughput,
    delivery: Option<Delivery>,
    rss_idle: u64,
    rss_peak: u64,
    rss_after: u64,
    processes: usize,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------
// A server's process tree: Harper runs worker threads and may fork helpers,
// so memory and CPU are summed over the root and every descendant.

/// The root and every live descendant, from each process's parent in /proc.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent is the second field after the parenthesised command name.
            if let Some(ppid) = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    // Each pass adds the children of what is already in; depth is small.
    for _ in 0..16 {
        let before = tree.len();
        for &(pid, ppid) in &parents {
            if tree.contains(&ppid) && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    tree
}

fn tree_rss(root: u32) -> u64 {
    process_tree(root).into_iter().map(rss_kib).sum()
}

/// The sum of each process's own peak: exact for one process, an upper bound
/// for several (their peaks need not coincide).
fn tree_peak(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .map(|pid| status_kib(pid, "VmHWM:"))
        .sum()
}

fn tree_cpu(root: u32) -> Duration {
    process_tree(root).into_iter().map(process_cpu).sum()
}

// ---------------------------------------------------------------------------
// The load, the same for both servers.

/// `writers` keep-alive clients PUT the one record, each after the last ack,
/// for [`THROUGHPUT_PHASE`].
async fn put_throughput(peer: &Peer, writers: usize) -> Throughput {
    let cpu_before = tree_cpu(peer.pid);
    let own_cpu_before = process_cpu(std::process::id());
    let deadline = Instant::now() + THROUGHPUT_PHASE;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let mut connection = peer.connect_http().await;
        let path = peer.record_path.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            let mut i = 0u64;
            while Instant::now() < deadline && i < 1_000_000 {
                let body = json!({"id": RECORD, "writer": w, "i": i}).to_string();
                let sent = Instant::now();
                let status = connection.put(&path, &body).await;
                if (200..300).contains(&status) {
                    latencies.push(sent.elapsed());
                } else {
                    failed += 1;
                }
                i += 1;
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        if let Ok((l, f)) = task.await {
            latencies.extend(l);
            failed += f;
        }
    }
    let elapsed = started.elapsed();
    let cpu = tree_cpu(peer.pid).saturating_sub(cpu_before);
    // The load generator shares the cores: its own CPU says how much it took.
    let own_cpu = process_cpu(std::process::id()).saturating_sub(own_cpu_before);
    latencies.sort_unstable();
    let figures = Throughput {
        writes: latencies.len(),
        failed,
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        cpu,
    };
    println!(
        "{:<8} REST PUT one record, {writers:>2} keep-alive client(s): {:>7.0} writes/s   ack p50 {}   p99 {}   server CPU {:.1} s = {:.0} writes per server CPU-second   ({} writes, {} failed; load generator CPU {:.1} s; load {})",
        peer.name,
        figures.rate,
        ms(figures.p50),
        ms(figures.p99),
        cpu.as_secs_f64(),
        figures.per_cpu_second(),
        figures.writes,
        figures.failed,
        own_cpu.as_secs_f64(),
        load_average(),
    );
    figures
}

/// Microseconds since the benchmark's epoch: the clock every schedule and
/// every arrival is read on.
/// An MQTT 3.1.1 QoS 0 subscriber to the record's topic (with the server's
/// login, if it wants one), subscribed before this returns; the task collects
/// each write's delay from its scheduled time. The retained state sent on
/// subscribe has no `sched_us` and is skipped.
async fn mqtt_subscriber(
    peer: &Peer,
    base: Instant,
    count: usize,
) -> Result<tokio::task::JoinHandle<Vec<Duration>>, String> {
    use marquee::mqtt::{
        Connect, ConnectProperties, Packet, ProtocolVersion, QoS, Subscribe, Subscription,
        decode_as_client, encode,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const V: ProtocolVersion = ProtocolVersion::V311;
    let mut stream = tokio::net::TcpStream::connect(peer.mqtt)
        .await
        .map_err(|e| format!("MQTT connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let mut buf = bytes::BytesMut::new();
    let give_up = Instant::now() + Duration::from_secs(10);
    // CONNECT, then SUBSCRIBE only once the CONNACK is in: a server may check
    // the login asynchronously and refuse a SUBSCRIBE that arrives before that.
    let connect = Packet::Connect(Connect {
        protocol: V,
        clean_start: true,
        keep_alive: 120,
        client_id: format!("peer-bench-{}", std::process::id()),
        will: None,
        username: peer.login.as_ref().map(|(u, _)| u.clone()),
        password: peer
            .login
            .as_ref()
            .map(|(_, p)| bytes::Bytes::from(p.clone())),
        properties: ConnectProperties::default(),
    });
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1.try_into().map_err(|_| "packet id")?,
        subscriptions: vec![Subscription::new(
            format!("{TABLE}/{RECORD}"),
            QoS::AtMostOnce,
        )],
        properties: Default::default(),
    });
    for (packet, wanted) in [(connect, "CONNACK"), (subscribe, "SUBACK")] {
        let mut out = bytes::BytesMut::new();
        encode(&packet, V, &mut out).map_err(|e| format!("encode: {e}"))?;
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("MQTT send: {e}"))?;
        'answer: loop {
            while let Some(packet) =
                decode_as_client(&mut buf, V, 1 << 20).map_err(|e| format!("decode: {e}"))?
            {
                match packet {
                    Packet::ConnAck(ack) if ack.reason_code.is_error() => {
                        return Err(format!("CONNACK refused: {:?}", ack.reason_code));
                    }
                    Packet::ConnAck(_) if wanted == "CONNACK" => break 'answer,
                    Packet::SubAck(ack) => {
                        if let Some(code) = ack.reason_codes.iter().find(|c| c.is_error()) {
                            return Err(format!("SUBACK refused: {code:?}"));
                        }
                        break 'answer;
                    }
                    _ => {}
                }
            }
            match tokio::time::timeout_at(give_up.into(), stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(format!("no {wanted} within 10 s")),
            }
        }
    }
    Ok(tokio::spawn(mqtt_arrivals(
        stream,
        buf,
        count,
        base,
        |p, now| {
            let sent = serde_json::from_slice::<Value>(&p.payload).ok()?["sched_us"].as_u64()?;
            Some(Duration::from_micros(now.saturating_sub(sent)))
        },
    )))
}

/// Open loop: write `i` is due at `start + i / rate` and is sent then, whether
/// or not earlier writes have been answered; its delay is counted from that
/// scheduled time to its arrival at the MQTT subscriber, so a stall anywhere
/// shows in p99/max.
async fn delivery_latency(peer: &Peer) -> Option<Delivery> {
    let base = Instant::now();
    let subscriber = match mqtt_subscriber(peer, base, DELIVERY_WRITES).await {
        Ok(s) => s,
        Err(why) => {
            println!(
                "{:<8} PUT -> MQTT delivery: not measured ({why})",
                peer.name
            );
            return None;
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let writes = PacedWrites {
        addr: peer.http.clone(),
        extra_headers: peer
            .authorization()
            .map(|value| format!("Authorization: {value}\r\n"))
            .unwrap_or_default(),
        connections: 8,
        base,
        start_us: now_us(base) + 10_000,
        period_us: 1_000_000 / DELIVERY_RATE,
        count: DELIVERY_WRITES,
    };
    let path = peer.record_path.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        writes.run(move |i, due_us| {
            let body = json!({"id": RECORD, "i": i, "sched_us": due_us});
            ("PUT", path.clone(), body.to_string())
        })
    })
    .await
    .expect("paced writes");
    let mut l = tokio::time::timeout(Duration::from_secs(70), subscriber)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    l.sort_unstable();
    let figures = Delivery {
        p50: percentile(&l, 0.50),
        p99: percentile(&l, 0.99),
        max: l.last().copied().unwrap_or_default(),
        delivered: l.len(),
    };
    println!(
        "{:<8} PUT -> MQTT QoS 0 delivery, open loop at {DELIVERY_RATE} writes/s: p50 {}   p99 {}   max {}   ({} of {DELIVERY_WRITES} delivered; {} writes failed; sender at most {} behind schedule; load {})",
        peer.name,
        ms(figures.p50),
        ms(figures.p99),
        ms(figures.max),
        figures.delivered,
        outcome.failed,
        ms(outcome.late),
        load_average(),
    );
    Some(figures)
}

/// Whether the server's PUT acknowledgement follows an fsync: `strace` is
/// attached to its whole process tree for one PUT, and the bench looks for an
/// fsync/fdatasync that completed between the request being read and the
/// `HTTP/1.1 2xx` response being written.
async fn ack_follows_fsync(peer: &Peer, dir: &Path) -> String {
    if Command::new("strace").arg("-V").output().is_err() {
        return "not checked (strace is not installed)".into();
    }
    let log = dir.join(format!("{}-strace.txt", peer.name.to_lowercase()));
    let mut args = vec![
        "-f".to_owned(),
        "-qq".to_owned(),
        "-s".to_owned(),
        "16".to_owned(),
        "-e".to_owned(),
        "trace=fsync,fdatasync,read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg".to_owned(),
        "-o".to_owned(),
        log.display().to_string(),
    ];
    for pid in process_tree(peer.pid) {
        args.push("-p".into());
        args.push(pid.to_string());
    }
    let Ok(mut strace) = Command::new("strace")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return "not checked (strace did not start)".into();
    };
    // Attaching to every thread takes a moment; nothing says when it is done.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut http = peer.connect_http().await;
    let status = http
        .put(
            &peer.record_path,
            &json!({"id": RECORD, "strace": true}).to_string(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = strace.kill();
    let _ = strace.wait();
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = trace.lines().collect();
    // The request's arrival, then the first 2xx written after it: a sync in
    // between belongs to this write (a periodic sync before it would not).
    let Some(request) = lines.iter().position(|l| l.contains("PUT /")) else {
        return format!(
            "not checked (the request was not seen in the trace; PUT answered {status})"
        );
    };
    let Some(response) = lines[request..]
        .iter()
        .position(|l| l.contains("HTTP/1.1 2"))
        .map(|i| request + i)
    else {
        return format!("not checked (no 2xx response seen in the trace; PUT answered {status})");
    };
    let synced = lines[request..response]
        .iter()
        .any(|l| l.contains("sync") && l.trim_end().ends_with("= 0"));
    if synced {
        "yes: an fsync/fdatasync completed between reading the PUT and writing its 2xx (strace)"
            .into()
    } else {
        "NO: the 2xx was written with no fsync after the PUT was read (strace) -- not a like-for-like durable write".into()
    }
}

/// Idle memory, the load phases, peak and after memory, and the durability check.
async fn measure(peer: &Peer, dir: &Path) -> Figures {
    tokio::time::sleep(SETTLE).await;
    let rss_idle = tree_rss(peer.pid);
    let put_1 = put_throughput(peer, 1).await;
    let put_50 = put_throughput(peer, 50).await;
    let delivery = delivery_latency(peer).await;
    let rss_peak = tree_peak(peer.pid);
    let processes = process_tree(peer.pid).len();
    tokio::time::sleep(AFTER).await;
    let rss_after = tree_rss(peer.pid);
    println!(
        "{:<8} RSS idle {}   peak {} (VmHWM, {processes} process(es))   {} s after the load {}",
        peer.name,
        mib(rss_idle),
        mib(rss_peak),
        AFTER.as_secs(),
        mib(rss_after),
    );
    println!(
        "{:<8} PUT acknowledged after an fsync? {}",
        peer.name,
        ack_follows_fsync(peer, dir).await
    );
    Figures {
        put_1,
        put_50,
        delivery,
        rss_idle,
        rss_peak,
        rss_after,
        processes,
    }
}

// ---------------------------------------------------------------------------
// Marquee

async fn run_marquee(dir: &Path) -> Option<Figures> {
    let server = Marquee::start(&dir.join("marquee"));
    let http = server.url.trim_start_matches("http://").to_owned();
    let mut client = RawHttp::connect(&http).await;
    let status = client
        .request("POST", "/api/_tables", &json!({"name": TABLE}).to_string())
        .await;
    if !(200..300).contains(&status) {
        println!("Marquee: declaring table {TABLE} answered {status}; its figures are skipped");
        return None;
    }
    let peer = Peer {
        name: "Marquee",
        http,
        record_path: format!("/api/{TABLE}/{RECORD}"),
        login: None,
        mqtt: server.mqtt,
        pid: server.pid(),
    };
    println!(
        "Marquee  {} (release build, --auth-mode open), HTTP {}, MQTT {}",
        env!("CARGO_PKG_VERSION"),
        peer.http,
        peer.mqtt
    );
    Some(measure(&peer, dir).await)
}

// ---------------------------------------------------------------------------
// Harper

/// A running Harper, its whole process tree killed when dropped.
struct Harper {
    child: Child,
}

impl Drop for Harper {
    fn drop(&mut self) {
        // Children first (if it forked any), then the root.
        let tree = process_tree(self.child.id());
        for pid in tree.iter().skip(1) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/harper/node_modules/harperdb/bin/harperdb.js`, where `make bench` installs it.
fn harper_script() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_marquee"))
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("harper/node_modules/harperdb/bin/harperdb.js")
}

/// A loopback port free right now (the server binds it a moment later).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Installs Harper into `dir/hdb` and starts it with the `Sensors` component.
/// Harper 4.7 reads its install answers from the environment (`TC_AGREEMENT`,
/// `ROOTPATH`, `HDB_ADMIN_USERNAME`, `HDB_ADMIN_PASSWORD`) and any config value
/// from `HARPER_SET_CONFIG` (JSON). Everything else is its default config
/// (`storage.writeAsync: false`, worker threads = cores), except: ports picked
/// here; the TLS ports (9926, 9925, 8883, replication 9933 by default) off, as
/// there is no TLS in this comparison.
async fn start_harper(dir: &Path) -> Result<(Harper, Peer), String> {
    let script = harper_script();
    if !script.exists() {
        return Err(format!(
            "{} is missing: `make bench` installs it (npm install --prefix target/harper harperdb@{HARPER_VERSION})",
            script.display()
        ));
    }
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node is not installed: {e}"))?;
    let root = dir.join("harper");
    let app = root.join("app");
    std::fs::create_dir_all(&app).map_err(|e| format!("{}: {e}", app.display()))?;
    std::fs::create_dir_all(root.join("home")).map_err(|e| format!("home: {e}"))?;
    let files = [
        (
            "schema.graphql",
            format!("type {TABLE} @table @export {{\n\tid: ID @primaryKey\n}}\n"),
        ),
        (
            "config.yaml",
            "rest: true\ngraphqlSchema:\n  files: 'schema.graphql'\n".to_owned(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(app.join(name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    let (http_port, ops_port, mqtt_port) = (free_port()?, free_port()?, free_port()?);
    let config = json!({
        "http": {"port": http_port, "securePort": null},
        "operationsApi": {"network": {"port": ops_port, "securePort": null}},
        "mqtt": {"network": {"port": mqtt_port, "securePort": null}},
        "replication": {"securePort": null},
    })
    .to_string();
    let harper = |args: &[&str], log: &str| -> Result<Child, String> {
        let log = std::fs::File::create(root.join(log)).map_err(|e| format!("{log}: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("log: {e}"))?;
        Command::new("node")
            .arg(&script)
            .args(args)
            // Harper keeps a boot-properties file in $HOME: keep it in the bench's data.
            .env("HOME", root.join("home"))
            .env("TC_AGREEMENT", "yes")
            .env("ROOTPATH", root.join("hdb"))
            .env("HDB_ADMIN_USERNAME", HARPER_USER)
            .env("HDB_ADMIN_PASSWORD", HARPER_PASSWORD)
            .env("HARPER_SET_CONFIG", &config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("node {}: {e}", script.display()))
    };

    // Install on its own, so the running server's VmHWM does not include it.
    let mut install = harper(&["install"], "install.log")?;
    let deadline = Instant::now() + HARPER_START;
    loop {
        match install.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => {
                return Err(format!(
                    "`harperdb install` exited with {status}: {}",
                    log_tail(&root.join("install.log"))
                ));
            }
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => {
                let _ = install.kill();
                let _ = install.wait();
                return Err(format!(
                    "`harperdb install` did not finish in {} s",
                    HARPER_START.as_secs()
                ));
            }
        }
    }

    let mut server = Harper {
        child: harper(&["run", &app.display().to_string()], "harper.log")?,
    };
    let peer = Peer {
        name: "Harper",
        http: format!("127.0.0.1:{http_port}"),
        record_path: format!("/{TABLE}/{RECORD}"),
        login: Some((HARPER_USER.into(), HARPER_PASSWORD.into())),
        mqtt: SocketAddr::from(([127, 0, 0, 1], mqtt_port)),
        pid: server.child.id(),
    };
    // Ready when the table answers a write; bounded in time.
    let client = reqwest::Client::new();
    let url = format!("http://{}{}", peer.http, peer.record_path);
    let deadline = Instant::now() + HARPER_START;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "Harper exited with {status}: {}",
                log_tail(&root.join("harper.log"))
            ));
        }
        let answer = client
            .put(&url)
            .basic_auth(HARPER_USER, Some(HARPER_PASSWORD))
            .timeout(Duration::from_secs(5))
            .json(&json!({"id": RECORD, "i": -1}))
            .send()
            .await;
        if let Ok(r) = answer
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Harper did not accept a PUT to {url} within {} s: {}",
                HARPER_START.as_secs(),
                log_tail(&root.join("harper.log"))
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "Harper   {HARPER_VERSION} (npm harperdb, node {}, default config but ports; threads.count default = cores), HTTP {}, MQTT {} -- it listens on all interfaces (4.7 has no host setting for these ports)",
        String::from_utf8_lossy(&node.stdout).trim(),
        peer.http,
        peer.mqtt
    );
    Ok((server, peer))
}

async fn run_harper(dir: &Path) -> Option<Figures> {
    match start_harper(dir).await {
        Ok((server, peer)) => {
            let figures = measure(&peer, dir).await;
            drop(server);
            Some(figures)
        }
        Err(why) => {
            println!("Harper   not measured: {why}");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The comparison

/// One ratio line: `better` is Marquee's advantage (> 1 = Marquee better).
fn ratio_line(figure: &str, how: &str, better: f64, aim: Option<f64>) {
    let aim = match aim {
        Some(a) if better >= a => format!("aim >= {a}x: met"),
        Some(a) => format!("aim >= {a}x: not met"),
        None => "(no aim stated)".into(),
    };
    println!("  {figure:<44} {how:<18} {better:>6.1}x   {aim}");
}

fn compare(m: &Figures, h: &Figures) {
    let secs = |d: Duration| d.as_secs_f64().max(1e-6);
    println!();
    println!("Marquee against Harper (> 1 = Marquee better), next to issue 13's aims:");
    for (clients, mq, hp) in [(1, &m.put_1, &h.put_1), (50, &m.put_50, &h.put_50)] {
        ratio_line(
            &format!("REST PUT writes/s, {clients} client(s)"),
            "Marquee / Harper",
            mq.rate / hp.rate.max(1e-6),
            Some(5.0),
        );
        ratio_line(
            &format!("REST PUT writes per CPU-second, {clients} client(s)"),
            "Marquee / Harper",
            mq.per_cpu_second() / hp.per_cpu_second().max(1e-6),
            Some(5.0),
        );
        ratio_line(
            &format!("REST PUT ack p99, {clients} client(s)"),
            "Harper / Marquee",
            secs(hp.p99) / secs(mq.p99),
            None,
        );
    }
    match (&m.delivery, &h.delivery) {
        (Some(md), Some(hd)) => {
            ratio_line(
                "PUT -> MQTT delivery p99 at 100/s",
                "Harper / Marquee",
                secs(hd.p99) / secs(md.p99),
                Some(5.0),
            );
            ratio_line(
                "PUT -> MQTT delivery p50 at 100/s",
                "Harper / Marquee",
                secs(hd.p50) / secs(md.p50),
                None,
            );
        }
        _ => println!("  PUT -> MQTT delivery: not compared (not measured on both)"),
    }
    let kib = |k: u64| k.max(1) as f64;
    ratio_line(
        "RSS idle",
        "Harper / Marquee",
        kib(h.rss_idle) / kib(m.rss_idle),
        None,
    );
    ratio_line(
        "RSS peak (VmHWM)",
        "Harper / Marquee",
        kib(h.rss_peak) / kib(m.rss_peak),
        Some(10.0),
    );
    ratio_line(
        &format!("RSS {} s after", AFTER.as_secs()),
        "Harper / Marquee",
        kib(h.rss_after) / kib(m.rss_after),
        None,
    );
    if h.processes > 1 {
        println!(
            "  (Harper's peak is the sum of {} processes' own peaks: an upper bound)",
            h.processes
        );
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let dir = BenchDir::new("peer");
    println!("Marquee against Harper {HARPER_VERSION}, one after the other on this machine");
    print_environment(dir.path());
    let marquee = run_marquee(dir.path()).await;
    println!();
    let harper = run_harper(dir.path()).await;
    if let (Some(m), Some(h)) = (&marquee, &harper) {
        compare(m, h);
    }
    println!("load average at the end {}", load_average());
}

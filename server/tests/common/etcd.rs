//! An etcd cluster of real `etcd` processes (Debian's `etcd-server`), each
//! member on free loopback ports with its own data directory, all killed when
//! the cluster is dropped (also when a test panics). The tests keep the data
//! in a temporary directory; the benches (`benches/support`, which include
//! this file) under `target/bench-data/`, a real disk: etcd fsyncs its WAL on
//! every write, and that cost is what they measure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a new cluster may take to elect its leader.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long `leader()` waits for one after a fault.
const LEADER_LIMIT: Duration = Duration::from_secs(15);

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    metrics: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: PathBuf,
    /// The tests' temporary directory, removed with the cluster.
    _temporary: Option<tempfile::TempDir>,
}

/// The installed etcd's version line, or `None` if `etcd` does not run.
pub fn installed() -> Option<String> {
    let out = Command::new("etcd").arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("etcd")
            .to_owned()
    })
}

impl EtcdCluster {
    /// Starts `members` members in a temporary directory and waits until
    /// they have elected a leader. Panics (never skips) if etcd is not installed.
    pub fn start(members: usize) -> Self {
        assert!(
            installed().is_some(),
            "etcd is not installed (or does not run): run `make setup` (it installs Debian's etcd-server)"
        );
        let temporary = tempfile::tempdir().expect("temp dir for etcd");
        let mut cluster =
            Self::start_in(members, temporary.path()).unwrap_or_else(|e| panic!("{e}"));
        cluster._temporary = Some(temporary);
        cluster
    }

    /// Starts `members` members with their data under `dir` and waits until
    /// they have elected a leader. A port picked here can be taken by someone
    /// else before etcd binds it: then a member exits at once, and the
    /// cluster is started anew (in a fresh subdirectory), three times at most.
    pub fn start_in(members: usize, dir: &Path) -> Result<Self, String> {
        assert!(members > 0, "a cluster needs a member");
        let mut last_failure = String::new();
        for attempt in 0..3 {
            let mut cluster = Self::spawn_all(members, &dir.join(format!("try{attempt}")));
            match poll_until(START_LIMIT, || cluster.formed()) {
                Ok(()) => return Ok(cluster),
                Err(why) => last_failure = format!("{why}\n{}", cluster.log_tails()),
            }
        }
        Err(format!(
            "the etcd cluster of {members} did not elect a leader: {last_failure}"
        ))
    }

    fn spawn_all(count: usize, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("etcd dir");
        // Hold every listener until all ports are picked, so none repeats.
        let listeners: Vec<TcpListener> = (0..3 * count)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("port"))
            .collect();
        drop(listeners);
        let members: Vec<Member> = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| Member {
                name: format!("m{i}"),
                client: p[0],
                peer: p[1],
                metrics: p[2],
                data: dir.join(format!("m{i}")),
                log: dir.join(format!("m{i}.log")),
                child: None,
                paused: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "marquee-test-{}-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let mut cluster = Self {
            members,
            initial_cluster,
            token,
            dir: dir.to_owned(),
            _temporary: None,
        };
        for i in 0..count {
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &format!("http://{}", m.client)])
            .args(["--advertise-client-urls", &format!("http://{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://{}", m.peer)])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}", m.peer),
            ])
            .args(["--listen-metrics-urls", &format!("http://{}", m.metrics)])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
        self.members[i].paused = false;
    }

    /// The members' client endpoints (`127.0.0.1:port`), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.to_string()).collect()
    }

    /// `etcd://a,b,c`, as `marquee --store` takes it.
    pub fn store_flag(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The running members' process ids (for their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    /// The member that is leader now, waiting (bounded) until there is one.
    pub fn leader(&self) -> usize {
        self.leader_within(LEADER_LIMIT).unwrap_or_else(|| {
            panic!(
                "no etcd leader within {LEADER_LIMIT:?}\n{}",
                self.log_tails()
            )
        })
    }

    /// The member that leads now, waiting at most `limit` until one does.
    pub fn leader_within(&self, limit: Duration) -> Option<usize> {
        let mut found = None;
        let _ = poll_until(limit, || {
            found = self
                .live()
                .find(|&i| self.metric(i, "etcd_server_is_leader") == Some(1));
            Ok(found.is_some())
        });
        found
    }

    /// Kills member `i` with SIGKILL (its data directory stays).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].paused = false;
    }

    /// Starts member `i` again on its data directory and ports.
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.spawn(i);
    }

    /// Stops member `i` with SIGSTOP: its sockets stay open, it answers nothing.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.members[i].paused = true;
    }

    /// Lets a paused member run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.members[i].paused = false;
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.members[i]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("etcd member {i} is not running"))
            .id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Members running and not paused.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
    }

    /// Whether every member runs and one of them is leader.
    fn formed(&mut self) -> Result<bool, String> {
        for m in &mut self.members {
            if let Some(child) = m.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("etcd member {} exited: {status}", m.name));
            }
        }
        let all_see_a_leader =
            (0..self.members.len()).all(|i| self.metric(i, "etcd_server_has_leader") == Some(1));
        let one_leads = (0..self.members.len())
            .filter(|&i| self.metric(i, "etcd_server_is_leader") == Some(1))
            .count()
            == 1;
        Ok(all_see_a_leader && one_leads)
    }

    /// A gauge from member `i`'s metrics endpoint; `None` if it does not answer.
    fn metric(&self, i: usize, name: &str) -> Option<i64> {
        let body = http_get(self.members[i].metrics, "/metrics")?;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as i64)
    }

    /// The last lines of each member's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(8)..].join("\n");
            out.push_str(&format!("--- {} ({}):\n{tail}\n", m.name, m.log.display()));
        }
        out
    }

    /// Where the members keep their data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

/// Calls `ready` every 100 ms until it says yes or fails, at most `limit`.
fn poll_until(
    limit: Duration,
    mut ready: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET with short timeouts; the body, or `None`.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

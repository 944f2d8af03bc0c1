//! An etcd cluster for benches: real `etcd` processes (Debian's
//! `etcd-server`), each member on free loopback ports with its data directory
//! under the bench's own directory (`target/bench-data/…`, a real disk: etcd
//! fsyncs its WAL on every write, and that cost is what is measured), all
//! killed when dropped. The tests' `tests/common/etcd.rs` keeps its members
//! in a `tempfile` directory (`/tmp`, possibly tmpfs, where fsync is free) and
//! panics without etcd; a bench prints that and goes on without these rows.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    client: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
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
    /// Starts `count` members with their data under `dir` and waits (at
    /// most 30 s per try) until they have elected a leader. A port picked
    /// here can be taken by someone else before etcd binds it; then the
    /// cluster is started anew, three times at most.
    pub fn start(count: usize, dir: &Path) -> Result<Self, String> {
        let mut last_failure = String::new();
        for attempt in 0..3 {
            let mut cluster = Self::spawn_all(count, &dir.join(format!("try{attempt}")));
            match poll_until(Duration::from_secs(30), || cluster.formed()) {
                Ok(()) => return Ok(cluster),
                Err(why) => last_failure = format!("{why}\n{}", cluster.log_tails()),
            }
        }
        Err(format!(
            "the etcd cluster of {count} did not elect a leader: {last_failure}"
        ))
    }

    fn spawn_all(count: usize, dir: &Path) -> Self {
        // Hold every listener until all ports are picked, so none repeats.
        let listeners: Vec<TcpListener> = (0..3 * count)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("port"))
            .collect();
        drop(listeners);
        let initial_cluster = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://{}", p[1]))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::create_dir_all(dir).expect("etcd dir");
        let token = format!("marquee-bench-{}-{}", std::process::id(), dir.display());
        let members = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| {
                let log = dir.join(format!("m{i}.log"));
                let stderr = std::fs::File::create(&log).expect("etcd log file");
                let child = Command::new("etcd")
                    .args(["--name", &format!("m{i}")])
                    .arg("--data-dir")
                    .arg(dir.join(format!("m{i}")))
                    .args(["--listen-client-urls", &format!("http://{}", p[0])])
                    .args(["--advertise-client-urls", &format!("http://{}", p[0])])
                    .args(["--listen-peer-urls", &format!("http://{}", p[1])])
                    .args(["--initial-advertise-peer-urls", &format!("http://{}", p[1])])
                    .args(["--listen-metrics-urls", &format!("http://{}", p[2])])
                    .args(["--initial-cluster", &initial_cluster])
                    .args(["--initial-cluster-token", &token])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--logger", "zap", "--log-outputs", "stderr"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .expect("spawn etcd");
                Member {
                    client: p[0],
                    metrics: p[2],
                    log,
                    child: Some(child),
                }
            })
            .collect();
        Self { members }
    }

    /// `etcd://a,b,c`, as `marquee --store` takes it.
    pub fn store_flag(&self) -> String {
        let endpoints: Vec<String> = self.members.iter().map(|m| m.client.to_string()).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    /// The running members' process ids (for their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    /// The member that leads now, waiting (at most `limit`) until one does.
    pub fn leader(&self, limit: Duration) -> Option<usize> {
        let mut found = None;
        let _ = poll_until(limit, || {
            found = (0..self.members.len()).find(|&i| {
                self.members[i].child.is_some()
                    && self.metric(i, "etcd_server_is_leader") == Some(1)
            });
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
    }

    /// Whether every member runs and exactly one of them leads.
    fn formed(&mut self) -> Result<bool, String> {
        for m in &mut self.members {
            // A member that exited (a port taken) fails this try at once.
            if let Some(child) = m.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("etcd member {} exited: {status}", m.log.display()));
            }
        }
        let leaders = (0..self.members.len())
            .filter(|&i| self.metric(i, "etcd_server_is_leader") == Some(1))
            .count();
        let all_see_one =
            (0..self.members.len()).all(|i| self.metric(i, "etcd_server_has_leader") == Some(1));
        Ok(leaders == 1 && all_see_one)
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
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n");
            out.push_str(&format!("--- {}:\n{tail}\n", m.log.display()));
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

const TIMEOUT: Duration = Duration::from_millis(300);

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
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
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

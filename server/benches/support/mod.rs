//! What both benchmarks need: the release `marquee` binary started on
//! loopback ports with a fresh data directory, and a process's CPU time.

// Each benchmark uses part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    pub fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_marquee"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
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

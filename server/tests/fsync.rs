//! Nothing is acknowledged before it is durable — checked from the outside.
//!
//! A SIGKILL keeps the page cache, so a crash test alone cannot tell a write
//! that was fsynced from one that was merely written. Here the real binary
//! runs under `strace`, and the trace must show, for every request, an fsync
//! (or fdatasync) that finished after the request was read and before its
//! 2xx answer was written.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

const WRITES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_follows_an_fsync_that_covers_it() {
    if Command::new("strace").arg("-V").output().is_err() {
        // `make setup` installs it; without it this check cannot run.
        eprintln!("SKIPPED: strace is not installed (make setup installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.txt");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-e"])
        .arg("trace=read,recvfrom,write,writev,sendto,sendmsg,fsync,fdatasync")
        .arg("-s")
        .arg("24")
        .arg("-o")
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_marquee"))
        .arg("--data-dir")
        .arg(data_path(&dir))
        .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
        .args(["--auth-mode", "open"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("strace runs");
    let url = {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned()
    };
    let http = client();
    // One at a time, so each request's read, fsync and answer stand in order.
    for i in 0..WRITES {
        let response = put(&http, &url, &format!("/api/signs/f{i}"), &json!({})).await;
        assert_eq!(response.status(), 201);
    }
    // Killing strace would only detach it: end the traced server itself.
    let strace_pid = child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let _ = child.kill();
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (answered, unsynced) = check(&trace);
    assert_eq!(answered, WRITES, "every answer was seen in the trace");
    assert!(
        unsynced.is_empty(),
        "answers written with no fsync since their request was read: {unsynced:?}"
    );
}

/// Reads the trace: returns how many 2xx answers to a PUT were written, and
/// those written without an fsync completing since their request was read.
fn check(trace: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(trace).expect("the trace");
    let mut waiting_for_sync = false;
    let mut answered = 0;
    let mut unsynced = Vec::new();
    for line in text.lines() {
        // Lines look like `PID syscall(args) = result`, or are split across
        // threads as `<unfinished ...>` then `<... syscall resumed> ...`.
        let Some((_, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let synced = (call.starts_with("fdatasync(") || call.starts_with("fsync("))
            && !call.contains("<unfinished")
            || (call.starts_with("<... fdatasync resumed>")
                || call.starts_with("<... fsync resumed>"));
        if synced && call.trim_end().ends_with("= 0") {
            waiting_for_sync = false;
        } else if (call.starts_with("read(") || call.starts_with("recvfrom("))
            && call.contains("\"PUT /api/signs/")
        {
            waiting_for_sync = true;
        } else if (call.starts_with("write") || call.starts_with("send"))
            && call.contains("\"HTTP/1.1 20")
        {
            answered += 1;
            if waiting_for_sync {
                unsynced.push(line.to_owned());
            }
        }
    }
    (answered, unsynced)
}

//! Outside clients against the broker: Debian's `mosquitto_pub` and
//! `mosquitto_sub` (package mosquitto-clients, installed by `make test`), for
//! retained records, QoS 2, wildcards and MQTT 5.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{TestServer, client, get_json, put};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: `make test` installs Debian's mosquitto-clients"
    );
    Command::new(name)
}

fn base(cmd: &mut Command, addr: SocketAddr) -> &mut Command {
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
}

async fn mosquitto_pub(addr: SocketAddr, args: &[&str]) {
    let output = base(&mut tool("mosquitto_pub"), addr)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `mosquitto_sub` and waits until it has subscribed (`-d` prints SUBACK).
async fn mosquitto_sub(
    addr: SocketAddr,
    args: &[&str],
) -> (
    Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    tool("mosquitto_sub");
    // Line-buffered, or the debug lines sit in stdio's buffer until a message comes.
    let mut stdbuf = Command::new("stdbuf");
    stdbuf.args(["-oL", "mosquitto_sub"]);
    let mut child = base(&mut stdbuf, addr)
        .args(["-d", "-W", "10"])
        .args(args)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("mosquitto_sub subscribes")
            .unwrap()
            .expect("mosquitto_sub output");
        if line.starts_with("Subscribed (mid") {
            break;
        }
    }
    (child, lines)
}

/// The next line that is a message, not `-d` debug output.
async fn next_message(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("a message within 5 s")
            .unwrap()
            .expect("mosquitto_sub still running");
        let debug = ["Client ", "Subscribed ("]
            .iter()
            .any(|p| line.starts_with(p));
        if !debug {
            return line;
        }
    }
}

fn mqtt_addr(server: &TestServer) -> SocketAddr {
    server.mqtt_addr()
}

#[tokio::test]
async fn mosquitto_pub_retained_qos1_is_a_record_and_mosquitto_sub_gets_it_back() {
    let server = TestServer::start().await;
    let addr = mqtt_addr(&server);
    mosquitto_pub(
        addr,
        &[
            "-t",
            "signs/lobby",
            "-q",
            "1",
            "-r",
            "-m",
            r#"{"name":"Lobby"}"#,
        ],
    )
    .await;
    let (status, body) = get_json(&client(), &server.url, "/api/signs/lobby").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "Lobby");

    // A new subscriber gets it as a retained message (-R would skip stale ones).
    let (_sub, mut lines) = mosquitto_sub(addr, &["-t", "signs/#", "-v", "-q", "1"]).await;
    // The sign comes back as stored: checked, with its defaults filled in.
    let line = next_message(&mut lines).await;
    let (topic, payload) = line.split_once(' ').unwrap_or_default();
    assert_eq!(topic, "signs/lobby");
    let sign: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(
        (&sign["name"], &sign["width"]),
        (&json!("Lobby"), &json!(64))
    );
    server.stop().await;
}

#[tokio::test]
async fn mosquitto_qos2_and_wildcards_end_to_end_with_rest() {
    let server = TestServer::start().await;
    let addr = mqtt_addr(&server);
    let (_sub, mut lines) =
        mosquitto_sub(addr, &["-t", "devices/+", "-t", "home/#", "-v", "-q", "2"]).await;
    mosquitto_pub(addr, &["-t", "home/a/b", "-q", "2", "-m", "deep"]).await;
    assert_eq!(next_message(&mut lines).await, "home/a/b deep");
    put(
        &client(),
        &server.url,
        "/api/devices/clock",
        &json!({"kind": "awtrix3"}),
    )
    .await;
    // The record as stored: the device model fills in every default.
    let line = next_message(&mut lines).await;
    let (topic, payload) = line.split_once(' ').unwrap();
    assert_eq!(topic, "devices/clock");
    let stored = app::device::Device::from_json(&json!({"kind": "awtrix3"}))
        .unwrap()
        .to_json();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(payload).unwrap(),
        stored
    );
    server.stop().await;
}

#[tokio::test]
async fn mosquitto_mqtt5_user_properties_pass_through() {
    let server = TestServer::start().await;
    let addr = mqtt_addr(&server);
    let (_sub, mut lines) =
        mosquitto_sub(addr, &["-V", "mqttv5", "-t", "chat/#", "-F", "%t %p %P"]).await;
    mosquitto_pub(
        addr,
        &[
            "-V",
            "mqttv5",
            "-t",
            "chat/x",
            "-m",
            "hi",
            "-D",
            "publish",
            "user-property",
            "room",
            "blue",
        ],
    )
    .await;
    let line = next_message(&mut lines).await;
    assert!(line.starts_with("chat/x hi"), "{line}");
    assert!(line.contains("room:blue"), "{line}");
    server.stop().await;
}

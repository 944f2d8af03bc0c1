//! `marquee admin`, run as a person would: the binary on a data directory,
//! then the accounts it left checked through the library, and a server
//! started on the same directory.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{ChildServer, client, get_json};
use marquee::auth::{Accounts, Passwords, Role};
use marquee::store::Store;

/// Runs `marquee admin ARGS` on `data`, with `stdin` as its standard input.
fn admin(data: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_marquee"))
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn marquee admin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command failed, saying `why` on stderr.
fn assert_refused(out: &Output, why: &str) {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted; wanted a refusal saying {why:?}"
    );
    assert!(stderr.contains(why), "{stderr}");
}

/// The accounts in a data directory no server holds.
fn accounts(data: &Path) -> (Accounts, Store) {
    let store = common::open_store(data);
    (Accounts::new(store.clone(), Passwords::new()), store)
}

#[tokio::test]
async fn create_list_and_reset_accounts_on_a_stopped_servers_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let out = admin(
        &data,
        &["create-user", "Alice", "--password-stdin"],
        "correct horse\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Created 'alice' (admin).\n");

    let out = admin(&data, &["create-user", "bob", "--role", "viewer"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let generated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Password (shown only now): "))
        .unwrap_or_else(|| panic!("no generated password in {stdout:?}"))
        .to_owned();
    assert_eq!(generated.len(), 24);

    let out = admin(
        &data,
        &["create-user", "ALICE", "--password-stdin"],
        "another one\n",
    );
    assert_refused(&out, "already exists");

    let out = admin(
        &data,
        &["create-user", "carol", "--password-stdin"],
        "short\n",
    );
    assert_refused(&out, "at least 8 characters");
    let out = admin(
        &data,
        &["create-user", "a/b", "--password-stdin"],
        "long enough\n",
    );
    assert_refused(&out, "user name");

    let out = admin(&data, &["list-users"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<Vec<String>> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(3).map(str::to_owned).collect())
        .collect();
    assert_eq!(
        listed,
        vec![vec!["alice", "admin", "no"], vec!["bob", "viewer", "no"]]
    );
    assert!(
        !text(&out.stdout).contains("argon2"),
        "hashes are never shown"
    );

    let out = admin(
        &data,
        &["reset-password", "alice", "--password-stdin"],
        "battery staple\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = admin(
        &data,
        &["reset-password", "nobody", "--password-stdin"],
        "battery staple\n",
    );
    assert_refused(&out, "no account named 'nobody'");

    let (accounts, store) = accounts(&data);
    let alice = accounts.check("alice", "battery staple").await.unwrap();
    assert_eq!(alice.map(|a| a.role), Some(Role::Admin));
    assert!(
        accounts
            .check("alice", "correct horse")
            .await
            .unwrap()
            .is_none(),
        "old password still works"
    );
    assert!(accounts.check("bob", &generated).await.unwrap().is_some());
    assert!(
        accounts
            .check("nobody", &generated)
            .await
            .unwrap()
            .is_none()
    );
    store.shutdown().await;
}

#[tokio::test]
async fn a_running_servers_data_is_left_alone_and_accounts_are_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = admin(
        &data,
        &["create-user", "alice", "--password-stdin"],
        "correct horse\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let server = ChildServer::spawn(&data, &[]);
    let out = admin(
        &data,
        &["create-user", "mallory", "--password-stdin"],
        "correct horse\n",
    );
    assert_refused(&out, "in use");

    // Accounts are not a table: only the admin API shows them, to an admin;
    // and writing them made no change events.
    let http = client();
    let (status, body) = get_json(&http, &server.url, "/api/accounts/alice").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &serde_json::json!("unauthenticated"))
    );
    let (status, tables) = get_json(&http, &server.url, "/api/_tables").await;
    assert_eq!(status, 200);
    assert!(!tables.to_string().contains("\"accounts\""), "{tables}");
    let (_, changes) = get_json(&http, &server.url, "/api/changes?since=0").await;
    assert_eq!(changes["changes"], serde_json::json!([]), "{changes}");
    drop(server);

    let (accounts, store) = accounts(&data);
    let names: Vec<String> = accounts
        .list()
        .unwrap()
        .into_iter()
        .map(|a| a.username)
        .collect();
    assert_eq!(names, vec!["alice"]);
    store.shutdown().await;
}

/// `MARQUEE_ADMIN_PASSWORD` (and `MARQUEE_ADMIN_USER`) make the admin at
/// start, durably before the server says where it listens, and only while
/// there is no admin: a later start with another password changes nothing.
#[tokio::test]
async fn the_environment_seeds_the_first_admin_and_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = |user: &str, password: &str| {
        let mut server = ChildServer::spawn_with_env(
            &data,
            &[],
            &[
                ("MARQUEE_ADMIN_USER", user),
                ("MARQUEE_ADMIN_PASSWORD", password),
            ],
        );
        server.kill();
    };
    seed("Root", "first secret");
    seed("other", "second secret");

    let (accounts, store) = accounts(&data);
    let list: Vec<(String, Role)> = accounts
        .list()
        .unwrap()
        .into_iter()
        .map(|a| (a.username, a.role))
        .collect();
    assert_eq!(list, vec![("root".to_owned(), Role::Admin)]);
    assert!(
        accounts
            .check("root", "first secret")
            .await
            .unwrap()
            .is_some()
    );
    store.shutdown().await;
}

/// `marquee` started with no admin prints, after its address line, a
/// one-time setup link; the link's page creates the admin once; the next
/// start prints none. Until then data answers 401 `setup_required`.
#[tokio::test]
async fn the_first_start_prints_a_setup_link_that_works_once() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_marquee"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn marquee");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let address = lines.next().unwrap().unwrap();
        let url = address
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_owned();
        (child, url, lines)
    };
    let (mut child, url, mut lines) = start();
    let link = lines.next().unwrap().unwrap();
    let link = link
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no setup link in {link:?}"))
        .to_owned();
    let (page, token) = link.split_once('#').unwrap();
    assert_eq!(page, format!("{url}/setup"));
    assert!(token.starts_with("mqx_"), "{token}");

    let http = client();
    let (status, body) = get_json(&http, &url, "/api/signs/").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &serde_json::json!("setup_required"))
    );
    let setup = |token: String| {
        http.post(format!("{url}/api/auth/setup"))
            .json(&serde_json::json!({"token": token, "username": "Root", "password": "first admin pw"}))
            .send()
    };
    let wrong = setup(format!("{token}x")).await.unwrap();
    assert_eq!(wrong.status(), 403);
    let made = setup(token.to_owned()).await.unwrap();
    assert_eq!(made.status(), 201);
    assert!(
        made.headers()
            .get(reqwest::header::SET_COOKIE)
            .is_some_and(|c| c.to_str().unwrap().starts_with("marquee_session=mqs_"))
    );
    assert_eq!(setup(token.to_owned()).await.unwrap().status(), 409);
    let (status, body) = get_json(&http, &url, "/api/signs/").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &serde_json::json!("unauthenticated"))
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(lines);

    let (mut child, _, mut lines) = start();
    let _ = child.kill();
    let _ = child.wait();
    let rest: Vec<String> = lines.by_ref().map_while(Result::ok).collect();
    assert!(rest.iter().all(|l| !l.contains("/setup#")), "{rest:?}");
}

/// `open` mode lets anyone in, so beyond loopback `marquee` refuses it and says why.
#[test]
fn open_mode_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    for (http, mqtt) in [("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "0.0.0.0:0")] {
        let out = Command::new(env!("CARGO_BIN_EXE_marquee"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http", http, "--mqtt", mqtt, "--auth-mode", "open"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("loopback") && stderr.contains("0.0.0.0"),
            "{stderr}"
        );
    }
}

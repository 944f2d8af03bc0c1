//! Sign-in over HTTP, as a browser and a script meet it: a real `marquee`
//! started with `MARQUEE_ADMIN_PASSWORD`, driven with a plain HTTP client
//! that carries the cookie and `Origin` by hand, as a browser would.

mod common;

use common::ChildServer;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";

fn start(dir: &tempfile::TempDir) -> ChildServer {
    ChildServer::spawn_with_env(
        &dir.path().join("data"),
        &["--auth-mode", "accounts"],
        &[
            ("MARQUEE_ADMIN_USER", "admin"),
            ("MARQUEE_ADMIN_PASSWORD", PASSWORD),
        ],
    )
}

/// POSTs `body` to `path` from `origin` (None: no Origin header) with `cookie`.
async fn post(
    server: &ChildServer,
    path: &str,
    body: Value,
    origin: Option<&str>,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .json(&body);
    if let Some(origin) = origin {
        request = request.header(ORIGIN, origin);
    }
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// `GET /api/auth/me` with `cookie`: the status and body.
async fn me(server: &ChildServer, cookie: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}/api/auth/me", server.url));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `name=value` of the session cookie a response sets, and its attributes.
fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let set = response
        .headers()
        .get(SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set.split(';').next().unwrap().trim().to_owned();
    (pair, set)
}

#[tokio::test]
async fn a_browser_signs_in_sees_who_it_is_and_signs_out_only_from_its_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir);
    let origin = server.url.clone();

    for (username, password) in [("admin", "wrong password"), ("nobody", PASSWORD)] {
        let response = post(
            &server,
            "/api/auth/login",
            json!({"username": username, "password": password}),
            Some(&origin),
            None,
        )
        .await;
        assert_eq!(response.status(), 401, "{username}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_credentials");
        assert_eq!(body["error"]["message"], "invalid username or password");
    }
    let from_elsewhere = post(
        &server,
        "/api/auth/login",
        json!({"username": "admin", "password": PASSWORD}),
        Some("http://evil.example"),
        None,
    )
    .await;
    assert_eq!(
        from_elsewhere.status(),
        403,
        "login from another site's page"
    );

    let response = post(
        &server,
        "/api/auth/login",
        json!({"username": "Admin", "password": PASSWORD}),
        Some(&origin),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let (cookie, attributes) = session_cookie(&response);
    assert!(cookie.starts_with("marquee_session=mqs_"), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"username": "admin", "role": "admin", "mode": "accounts"})
    );

    assert_eq!(
        me(&server, Some(&cookie)).await,
        (
            200,
            json!({"username": "admin", "role": "admin", "mode": "accounts"})
        )
    );
    let (status, body) = me(&server, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthenticated"))
    );
    assert_eq!(me(&server, Some("marquee_session=mqs_forged")).await.0, 401);

    // Signing out with the cookie needs this server's Origin.
    for bad in [None, Some("http://evil.example"), Some("null")] {
        let response = post(&server, "/api/auth/logout", json!({}), bad, Some(&cookie)).await;
        assert_eq!(response.status(), 403, "{bad:?}");
        assert_eq!(
            me(&server, Some(&cookie)).await.0,
            200,
            "signed out by {bad:?}"
        );
    }
    let response = post(
        &server,
        "/api/auth/logout",
        json!({}),
        Some(&origin),
        Some(&cookie),
    )
    .await;
    assert_eq!(response.status(), 204);
    assert!(session_cookie(&response).1.contains("Max-Age=0"));
    assert_eq!(
        me(&server, Some(&cookie)).await.0,
        401,
        "the session outlived sign-out"
    );
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_and_the_wait_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir);
    let login = |password: &'static str| {
        post(
            &server,
            "/api/auth/login",
            json!({"username": "admin", "password": password}),
            None,
            None,
        )
    };
    for _ in 0..6 {
        assert_eq!(login("guess guess").await.status(), 401);
    }
    let throttled = login("guess guess").await;
    assert_eq!(throttled.status(), 429);
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = throttled.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // Even the right password waits its turn.
    assert_eq!(login(PASSWORD).await.status(), 429);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(login(PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_new_password_ends_every_session_and_the_old_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir);
    let origin = server.url.clone();
    let sign_in = |password: &'static str| {
        post(
            &server,
            "/api/auth/login",
            json!({"username": "admin", "password": password}),
            Some(&origin),
            None,
        )
    };
    let (first, _) = session_cookie(&sign_in(PASSWORD).await);
    let (second, _) = session_cookie(&sign_in(PASSWORD).await);

    let wrong = post(
        &server,
        "/api/auth/password",
        json!({"current": "not it at all", "new": "battery staple"}),
        Some(&origin),
        Some(&first),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let weak = post(
        &server,
        "/api/auth/password",
        json!({"current": PASSWORD, "new": "short"}),
        Some(&origin),
        Some(&first),
    )
    .await;
    assert_eq!(weak.status(), 422);
    let changed = post(
        &server,
        "/api/auth/password",
        json!({"current": PASSWORD, "new": "battery staple"}),
        Some(&origin),
        Some(&first),
    )
    .await;
    assert_eq!(changed.status(), 200);
    let (fresh, _) = session_cookie(&changed);

    assert_eq!(me(&server, Some(&first)).await.0, 401);
    assert_eq!(
        me(&server, Some(&second)).await.0,
        401,
        "another browser's session survived"
    );
    assert_eq!(me(&server, Some(&fresh)).await.0, 200);
    assert_eq!(sign_in(PASSWORD).await.status(), 401);
    assert_eq!(sign_in("battery staple").await.status(), 200);
}

/// A script's API token works as `Authorization: Bearer` and nowhere else; a
/// session secret is no bearer token.
#[tokio::test]
async fn an_api_token_is_a_bearer_token_and_a_session_is_not() {
    use marquee::auth::{Lifetime, TokenKind, Tokens};
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir);
    let origin = server.url.clone();
    let response = post(
        &server,
        "/api/auth/login",
        json!({"username": "admin", "password": PASSWORD}),
        Some(&origin),
        None,
    )
    .await;
    let (cookie, _) = session_cookie(&response);
    server.kill();

    // Until the API issues them, an API token is made in the stopped server's store.
    let api_token = {
        let store = common::open_store(&dir.path().join("data"));
        let tokens = Tokens::new(store.clone());
        let (secret, _) = tokens
            .issue(
                "admin",
                TokenKind::Api,
                Some("script".into()),
                Lifetime::API,
            )
            .await
            .unwrap();
        drop(tokens);
        store.shutdown().await;
        secret
    };
    let server = start(&dir);
    let bearer = |secret: &str| {
        reqwest::Client::new()
            .get(format!("{}/api/auth/me", server.url))
            .bearer_auth(secret)
            .send()
    };
    let response = bearer(&api_token).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["username"], "admin");
    let session_secret = cookie.trim_start_matches("marquee_session=").to_owned();
    assert_eq!(bearer(&session_secret).await.unwrap().status(), 401);
    assert_eq!(
        me(&server, Some(&format!("marquee_session={api_token}")))
            .await
            .0,
        401
    );
    // The session itself survived the restart.
    assert_eq!(me(&server, Some(&cookie)).await.0, 200);
}

/// Who a request is from, as a browser or a script sends it.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    /// The session cookie, from a page of this server (Origin).
    Browser(&'a str),
    /// The session cookie, without an Origin.
    BrowserNoOrigin(&'a str),
    Script(&'a str),
}

async fn call(
    server: &ChildServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    who: As<'_>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request = match who {
        As::Nobody => request,
        As::Browser(cookie) => request.header(COOKIE, cookie).header(ORIGIN, &server.url),
        As::BrowserNoOrigin(cookie) => request.header(COOKIE, cookie),
        As::Script(token) => request.bearer_auth(token),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Signs `username` in and returns its cookie (`name=value`).
async fn sign_in(server: &ChildServer, username: &str, password: &str) -> String {
    let response = post(
        server,
        "/api/auth/login",
        json!({"username": username, "password": password}),
        Some(&server.url),
        None,
    )
    .await;
    assert_eq!(response.status(), 200, "{username} cannot sign in");
    session_cookie(&response).0
}

async fn signs_in(server: &ChildServer, username: &str, password: &str) -> bool {
    post(
        server,
        "/api/auth/login",
        json!({"username": username, "password": password}),
        None,
        None,
    )
    .await
    .status()
        == 200
}

#[tokio::test]
async fn an_admin_manages_accounts_and_nobody_else_may() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir);
    let root = sign_in(&server, "admin", PASSWORD).await;
    let admin = As::Browser(&root);

    let (status, ed) = call(
        &server,
        Method::POST,
        "/api/accounts",
        Some(json!({"username": "Ed", "role": "editor", "password": "editor pass"})),
        admin,
    )
    .await;
    assert_eq!(status, 201, "{ed}");
    assert_eq!(
        (&ed["username"], &ed["role"], &ed["disabled"]),
        (&json!("ed"), &json!("editor"), &json!(false))
    );
    assert!(
        ed.get("password").is_none(),
        "a given password is never echoed"
    );
    let (status, vi) = call(
        &server,
        Method::POST,
        "/api/accounts",
        Some(json!({"username": "vi", "role": "viewer"})),
        admin,
    )
    .await;
    assert_eq!(status, 201);
    let vi_password = vi["password"]
        .as_str()
        .expect("a generated password, shown once")
        .to_owned();
    assert_eq!(vi_password.len(), 24);
    let (status, taken) = call(
        &server,
        Method::POST,
        "/api/accounts",
        Some(json!({"username": "ED", "role": "viewer", "password": "whatever1"})),
        admin,
    )
    .await;
    assert_eq!(
        (status, &taken["error"]["code"]),
        (409, &json!("account_exists"))
    );
    let (status, _) = call(
        &server,
        Method::POST,
        "/api/accounts",
        Some(json!({"username": "x", "role": "emperor", "password": "whatever1"})),
        admin,
    )
    .await;
    assert_eq!(status, 400);

    let (status, list) = call(&server, Method::GET, "/api/accounts", None, admin).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "ed", "vi"]);
    assert!(!list.to_string().contains("argon2"), "{list}");

    // Only an admin, and only from this server's pages.
    let ed_cookie = sign_in(&server, "ed", "editor pass").await;
    assert_eq!(
        call(
            &server,
            Method::GET,
            "/api/accounts",
            None,
            As::Browser(&ed_cookie)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            &server,
            Method::DELETE,
            "/api/accounts/vi",
            None,
            As::Browser(&ed_cookie)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(&server, Method::GET, "/api/accounts", None, As::Nobody)
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            &server,
            Method::DELETE,
            "/api/accounts/vi",
            None,
            As::BrowserNoOrigin(&root)
        )
        .await
        .0,
        403
    );

    // Disabling ends the account's sessions and its sign-in.
    let vi_cookie = sign_in(&server, "vi", &vi_password).await;
    let (status, changed) = call(
        &server,
        Method::PATCH,
        "/api/accounts/vi",
        Some(json!({"disabled": true})),
        admin,
    )
    .await;
    assert_eq!((status, &changed["disabled"]), (200, &json!(true)));
    assert_eq!(me(&server, Some(&vi_cookie)).await.0, 401);
    assert!(!signs_in(&server, "vi", &vi_password).await);

    // The last admin stays.
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/admin",
        Some(json!({"role": "viewer"})),
        admin,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("last_admin"))
    );
    assert_eq!(
        call(&server, Method::DELETE, "/api/accounts/admin", None, admin)
            .await
            .0,
        409
    );

    // A reset password ends the old sessions; the new one signs in.
    let (status, reset) = call(
        &server,
        Method::POST,
        "/api/accounts/ed/password",
        Some(json!({})),
        admin,
    )
    .await;
    assert_eq!(status, 200);
    let ed_password = reset["password"].as_str().unwrap().to_owned();
    assert_eq!(me(&server, Some(&ed_cookie)).await.0, 401);
    assert!(!signs_in(&server, "ed", "editor pass").await);
    assert!(signs_in(&server, "ed", &ed_password).await);

    assert_eq!(
        call(&server, Method::DELETE, "/api/accounts/ed", None, admin)
            .await
            .0,
        204
    );
    assert!(!signs_in(&server, "ed", &ed_password).await);
    assert_eq!(
        call(&server, Method::GET, "/api/accounts/ed", None, admin)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&server, Method::DELETE, "/api/accounts/ed", None, admin)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn api_tokens_are_shown_once_kept_apart_and_revoked() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir);
    let root = sign_in(&server, "admin", PASSWORD).await;
    let admin = As::Browser(&root);
    call(
        &server,
        Method::POST,
        "/api/accounts",
        Some(json!({"username": "ed", "role": "editor", "password": "editor pass"})),
        admin,
    )
    .await;
    let ed_cookie = sign_in(&server, "ed", "editor pass").await;
    let ed = As::Browser(&ed_cookie);

    let (status, made) = call(
        &server,
        Method::POST,
        "/api/tokens",
        Some(json!({"name": "deploy script"})),
        admin,
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mqt_"), "{secret}");
    let id = made["id"].as_str().unwrap().to_owned();
    let (_, listed) = call(&server, Method::GET, "/api/tokens", None, admin).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (&items[0]["id"], &items[0]["name"]),
        (&json!(id), &json!("deploy script"))
    );
    assert!(
        !listed.to_string().contains(&secret[4..]),
        "a secret listed again"
    );
    assert_eq!(items[0]["last_used"], Value::Null, "never used yet");
    let (status, who) = call(
        &server,
        Method::GET,
        "/api/auth/me",
        None,
        As::Script(&secret),
    )
    .await;
    assert_eq!((status, &who["username"]), (200, &json!("admin")));
    let (_, listed) = call(&server, Method::GET, "/api/tokens", None, admin).await;
    let used = listed["items"][0]["last_used"].as_str().unwrap_or_default();
    assert!(used.ends_with('Z'), "last use recorded: {listed}");

    let (status, eds) = call(
        &server,
        Method::POST,
        "/api/tokens",
        Some(json!({"name": "ed's"})),
        ed,
    )
    .await;
    assert_eq!(status, 201);
    let (_, ed_list) = call(&server, Method::GET, "/api/tokens?all=true", None, ed).await;
    assert_eq!(
        ed_list["items"].as_array().unwrap().len(),
        1,
        "an editor sees only its own"
    );
    assert_eq!(
        call(
            &server,
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            None,
            ed
        )
        .await
        .0,
        404
    );
    let (_, all) = call(&server, Method::GET, "/api/tokens?all=true", None, admin).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(
            &server,
            Method::POST,
            "/api/tokens",
            Some(json!({"name": ""})),
            ed
        )
        .await
        .0,
        400
    );

    // A script may revoke its own token with it.
    let ed_secret = eds["token"].as_str().unwrap().to_owned();
    let ed_id = eds["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &server,
            Method::DELETE,
            &format!("/api/tokens/{ed_id}"),
            None,
            As::Script(&ed_secret)
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            &server,
            Method::GET,
            "/api/auth/me",
            None,
            As::Script(&ed_secret)
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            &server,
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            None,
            admin
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            &server,
            Method::GET,
            "/api/auth/me",
            None,
            As::Script(&secret)
        )
        .await
        .0,
        401
    );
}

/// On loopback, a request whose `Host` names some other site is a page on
/// a name re-pointed at 127.0.0.1 (DNS rebinding): refused before anything
/// else, while the names a person types for this machine work.
#[tokio::test]
async fn a_loopback_server_answers_only_to_its_own_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(&dir.path().join("data"), &[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let http = reqwest::Client::new();
    let status = |host: String| {
        let request = http
            .get(format!("{}/api/signs/", server.url))
            .header(reqwest::header::HOST, host);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(status(host.clone()).await.0, 200, "{host}");
    }
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        "evil.example".to_owned(),
    ] {
        let (code, body) = status(host.clone()).await;
        assert_eq!(
            (code, &body["error"]["code"]),
            (403, &json!("bad_host")),
            "{host}"
        );
    }
}

/// Served over https (`public_url`), the session cookie is `Secure` and
/// `__Host-` prefixed, and pages from the public origin may use it.
#[tokio::test]
async fn behind_https_the_session_cookie_is_secure_and_host_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn_with_env(
        &dir.path().join("data"),
        &[
            "--auth-mode",
            "accounts",
            "--public-url",
            "https://signs.example.com/",
        ],
        &[("MARQUEE_ADMIN_PASSWORD", PASSWORD)],
    );
    let response = post(
        &server,
        "/api/auth/login",
        json!({"username": "admin", "password": PASSWORD}),
        Some("https://signs.example.com"),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let (cookie, attributes) = session_cookie(&response);
    assert!(
        cookie.starts_with("__Host-marquee_session=mqs_"),
        "{cookie}"
    );
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert_eq!(me(&server, Some(&cookie)).await.0, 200);
    // The public origin may change things with the cookie; another may not.
    let token = |origin: &'static str| {
        post(
            &server,
            "/api/tokens",
            json!({"name": origin}),
            Some(origin),
            Some(&cookie),
        )
    };
    assert_eq!(token("https://signs.example.com").await.status(), 201);
    assert_eq!(token("http://signs.example.com").await.status(), 403);
}

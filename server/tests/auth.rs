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
        &[],
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
        json!({"username": "admin", "role": "admin"})
    );

    assert_eq!(
        me(&server, Some(&cookie)).await,
        (200, json!({"username": "admin", "role": "admin"}))
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

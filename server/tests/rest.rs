//! REST over records and tables, as an HTTP client sees it.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_created_read_replaced_patched_and_deleted() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;

    let created = put(
        &http,
        url,
        "/api/signs/lobby",
        &json!({"name": "Lobby", "brightness": 50}),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["etag"], "\"1\"");
    assert_eq!(created.headers()["location"], "/api/signs/lobby");
    let event: Value = created.json().await.unwrap();
    assert_eq!(event["type"], "put");
    assert_eq!(event["version"], 1);
    assert_eq!(event["origin"], "rest");
    let first_seq = seq_of(&event);

    let (status, body) = get_json(&http, url, "/api/signs/lobby").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["name"], &body["brightness"]),
        (&json!("Lobby"), &json!(50))
    );

    let replaced = put(&http, url, "/api/signs/lobby", &json!({"name": "Front"})).await;
    assert_eq!(replaced.status(), 200);
    let event: Value = replaced.json().await.unwrap();
    assert_eq!(event["version"], 2);
    // Later, not "next": seqs strictly increase but may skip (etcd revisions).
    assert!(seq_of(&event) > first_seq, "{event}");

    let patched = http
        .patch(format!("{url}/api/signs/lobby"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"brightness": 80, "name": null}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let (_, body) = get_json(&http, url, "/api/signs/lobby").await;
    // A sign field patched away falls back to its default.
    assert_eq!(
        (&body["name"], &body["brightness"]),
        (&json!(""), &json!(80))
    );

    let deleted = http
        .delete(format!("{url}/api/signs/lobby"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let event: Value = deleted.json().await.unwrap();
    assert_eq!(event["type"], "delete");
    assert!(event.get("value").is_none());
    let (status, body) = get_json(&http, url, "/api/signs/lobby").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // Ids may hold spaces and non-ASCII text; Location gives a usable path for them.
    let odd = put(
        &http,
        url,
        "/api/signs/caf%C3%A9%20bar",
        &json!({"name": "Café"}),
    )
    .await;
    assert_eq!(odd.headers()["location"], "/api/signs/caf%C3%A9%20bar");
    let event: Value = odd.json().await.unwrap();
    assert_eq!(event["id"], "café bar");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_guard_writes_and_save_reads() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    put(&http, url, "/api/messages/hi", &json!({"text": "Hello"})).await;

    let stale = http
        .put(format!("{url}/api/messages/hi"))
        .header("if-match", "\"7\"")
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "version_mismatch");

    let fresh = http
        .put(format!("{url}/api/messages/hi"))
        .header("if-match", "\"1\"")
        .json(&json!({"text": "Hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);

    let create_only = http
        .put(format!("{url}/api/messages/hi"))
        .header("if-none-match", "*")
        .json(&json!({"text": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create_only.status(), 412);

    let cached = http
        .get(format!("{url}/api/messages/hi"))
        .header("if-none-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let changed = http
        .get(format!("{url}/api/messages/hi"))
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.headers()["etag"], "\"2\"");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_list_in_pages_and_post_makes_ids() {
    let server = TestServer::start_with(|config| {
        config.tables.push(marquee::store::TableDecl {
            name: "things".into(),
            schema: None,
        });
    })
    .await;
    let http = client();
    let url = &server.url;
    for i in 0..5 {
        put(&http, url, &format!("/api/things/d{i}"), &json!({"n": i})).await;
    }
    let posted = http
        .post(format!("{url}/api/things/"))
        .json(&json!({"n": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let location = posted.headers()["location"].to_str().unwrap().to_owned();
    let (status, body) = get_json(&http, url, &location).await;
    assert_eq!((status, body), (200, json!({"n": 99})));

    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/api/things/?limit=2&after={a}"),
            None => "/api/things/?limit=2".to_owned(),
        };
        let (status, page) = get_json(&http, url, &path).await;
        assert_eq!(status, 200);
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 6);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "listing is in id order");

    // Server-made ids are ULIDs, sorting in the order they were made.
    let mut made = Vec::new();
    for n in 0..20 {
        let posted = http
            .post(format!("{url}/api/things/"))
            .json(&json!({"n": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 201);
        let location = posted.headers()["location"].to_str().unwrap();
        made.push(location.trim_start_matches("/api/things/").to_owned());
    }
    for id in &made {
        assert_eq!(id.len(), 26, "{id}");
        assert!(
            id.bytes()
                .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)),
            "{id}"
        );
    }
    assert!(made.windows(2).all(|p| p[0] < p[1]), "{made:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let server = TestServer::start_with(|c| c.body_limit = 4096).await;
    let http = client();
    let url = &server.url;
    // A resume point the server has not reached (whatever seq it starts at).
    let (_, health) = get_json(&http, url, "/healthz").await;
    let future = health["last_seq"].as_u64().expect("last_seq") + 1_000_000;

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.put(format!("{url}/api/signs/a"))
                .header("content-type", "application/json")
                .body("{nope"),
            400,
            "malformed_json",
        ),
        (
            http.put(format!("{url}/api/signs/a")).body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            http.put(format!("{url}/api/signs/a"))
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            http.put(format!("{url}/api/signs/a"))
                .json(&json!({"pad": "x".repeat(5000)})),
            413,
            "payload_too_large",
        ),
        (
            http.put(format!("{url}/api/signs/a")).json(&json!([1, 2])),
            422,
            "invalid_record",
        ),
        (
            http.put(format!("{url}/api/nosuch/a")).json(&json!({})),
            404,
            "no_such_table",
        ),
        (
            http.get(format!("{url}/api/signs/missing")),
            404,
            "not_found",
        ),
        (http.get(format!("{url}/api/a/b/c/d")), 404, "not_found"),
        (
            http.post(format!("{url}/api/signs/a")).json(&json!({})),
            405,
            "method_not_allowed",
        ),
        (
            http.delete(format!("{url}/api/signs/")),
            405,
            "method_not_allowed",
        ),
        (
            http.patch(format!("{url}/api/signs/missing"))
                .json(&json!({"a": 1})),
            404,
            "not_found",
        ),
        (
            http.get(format!("{url}/api/changes?since=abc")),
            400,
            "bad_request",
        ),
        (
            http.get(format!("{url}/api/changes?since={future}")),
            410,
            "resume_gap",
        ),
        (
            http.post(format!("{url}/api/_tables"))
                .json(&json!({"name": "signs"})),
            409,
            "table_exists",
        ),
        (
            http.post(format!("{url}/api/_tables"))
                .json(&json!({"name": "_x"})),
            400,
            "bad_name",
        ),
        // U+FFFF, a non-character: MQTT would refuse it as a topic, so no
        // protocol may store it (the record could never be delivered).
        (
            http.put(format!("{url}/api/signs/a%EF%BF%BF"))
                .json(&json!({})),
            400,
            "bad_name",
        ),
        (
            http.put(format!("{url}/api/signs/a"))
                .header("if-match", "soon")
                .json(&json!({})),
            412,
            "version_mismatch",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        let got_status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(got_status, status, "body {body}");
        assert_eq!(body["error"]["code"], code, "body {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Nothing above was stored.
    let (_, page) = get_json(&http, url, "/api/signs/").await;
    assert_eq!(page["items"], json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_declared_with_schemas_and_removed_only_on_purpose() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    let declared = http
        .post(format!("{url}/api/_tables"))
        .json(&json!({"name": "Sensors", "schema": {
            "type": "object", "required": ["temp"],
            "properties": {"temp": {"type": "number"}}
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 201);

    let ok = put(&http, url, "/api/Sensors/t1", &json!({"temp": 21.5})).await;
    assert_eq!(ok.status(), 201);
    let rejected = put(&http, url, "/api/Sensors/t2", &json!({"temp": "warm"})).await;
    assert_eq!(rejected.status(), 422);
    let body: Value = rejected.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("/temp"),
        "{body}"
    );

    let careless = http
        .delete(format!("{url}/api/_tables/Sensors"))
        .send()
        .await
        .unwrap();
    assert_eq!(careless.status(), 400);
    let not_empty = http
        .delete(format!("{url}/api/_tables/Sensors?confirm=Sensors"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_empty.status(), 409);
    http.delete(format!("{url}/api/Sensors/t1"))
        .send()
        .await
        .unwrap();
    let removed = http
        .delete(format!("{url}/api/_tables/Sensors?confirm=Sensors"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let (status, _) = get_json(&http, url, "/api/Sensors/").await;
    assert_eq!(status, 404);
    let builtin = http
        .delete(format!("{url}/api/_tables/signs?confirm=signs"))
        .send()
        .await
        .unwrap();
    assert_eq!(builtin.status(), 403);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_tables_survive_restart_with_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marquee.toml");
    std::fs::write(
        &config,
        "[[tables]]\nname = \"Sensors\"\nschema = { type = \"object\", required = [\"temp\"] }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let config_arg = config.to_str().unwrap();
    let http = client();
    {
        let server = ChildServer::spawn(&data, &["--config", config_arg]);
        assert_eq!(
            put(&http, &server.url, "/api/Sensors/a", &json!({"temp": 1}))
                .await
                .status(),
            201
        );
        assert_eq!(
            put(&http, &server.url, "/api/Sensors/b", &json!({}))
                .await
                .status(),
            422
        );
    }
    let server = ChildServer::spawn(&data, &["--config", config_arg]);
    let (status, body) = get_json(&http, &server.url, "/api/Sensors/a").await;
    assert_eq!((status, body), (200, json!({"temp": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log_health_and_metrics_report_what_happened() {
    // /metrics are the node's own (its writes, its connections): on two
    // nodes the page comes from one of them and counts its share.
    let _one = common::one_node();
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(put_seq(&http, url, "/api/signs/s", &json!({"brightness": i})).await);
    }
    assert_strictly_increasing(&made, "three writes");
    let (status, page) = get_json(&http, url, &format!("/api/changes?since={}", made[0])).await;
    assert_eq!(status, 200);
    let got = changes_with(&page, "brightness");
    assert_eq!(got, vec![(made[1], json!(1)), (made[2], json!(2))]);
    let last_seq = page["last_seq"].as_u64().expect("last_seq");
    assert!(last_seq >= made[2], "{page}");

    let (status, health) = get_json(&http, url, "/healthz").await;
    assert_eq!((status, health["status"].clone()), (200, json!("ok")));
    assert!(
        health["last_seq"].as_u64().expect("last_seq") >= made[2],
        "{health}"
    );

    let metrics = metrics_text(&http, url).await;
    assert!(metrics.contains("marquee_changes_total 3"), "{metrics}");
    assert!(metrics.contains("marquee_write_latency_seconds_count 3"));
    assert!(metrics.contains("marquee_commit_batch_size_bucket"));
    assert!(metrics.contains("marquee_messages_in_total{protocol=\"rest\"}"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_are_delivered_but_not_stored() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    let mut sse = SseClient::connect(&format!("{url}/api/signs/lobby"), None).await;
    sse.until_sync().await;
    let published = http
        .post(format!("{url}/api/signs/lobby/publish"))
        .json(&json!({"flash": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202);
    let event = sse.next().await.expect("publish event");
    assert_eq!(event.kind(), "publish");
    assert_eq!(event.id, None, "transient messages have no seq");
    assert_eq!(event.json()["value"], json!({"flash": true}));
    let (status, _) = get_json(&http, url, "/api/signs/lobby").await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// RFC 9110 §13.1.1: an `If-Match` none of whose entity tags matches the
/// record's current ETag fails with 412 — whatever form the tags take — and a
/// list matches when any one strong tag does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_of_any_form_that_matches_nothing_is_412() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    put(&http, url, "/api/messages/m", &json!({"text": "one"})).await;
    put(&http, url, "/api/messages/m", &json!({"text": "two"})).await; // now "2"

    for tag in ["\"abc\"", "W/\"2\"", "\"1\", \"7\"", "\"\"", "2"] {
        let response = http
            .put(format!("{url}/api/messages/m"))
            .header("if-match", tag)
            .json(&json!({"text": "refused"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 412, "If-Match: {tag} → {body}");
        assert_eq!(body["error"]["code"], "version_mismatch", "If-Match: {tag}");
    }
    let (_, record) = get_json(&http, url, "/api/messages/m").await;
    assert_eq!(
        record["text"], "two",
        "a failed precondition changed the record"
    );

    // A list matches when one of its strong tags is the current version.
    let listed = http
        .put(format!("{url}/api/messages/m"))
        .header("if-match", "\"9\", \"2\", \"x\"")
        .json(&json!({"text": "three"}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let deleted = http
        .delete(format!("{url}/api/messages/m"))
        .header("if-match", "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 412);
    server.stop().await;
}

/// Deleting and re-creating a record continues its versions: an ETag taken
/// from the first record can never pass against the second, even after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_versions_never_repeat_across_delete_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = client();
    let version = |response: &reqwest::Response| {
        response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    {
        let server = ChildServer::spawn(&data, &[]);
        let url = &server.url;
        let created = put(&http, url, "/api/messages/m", &json!({"text": "one"})).await;
        assert_eq!(version(&created), "\"1\"");
        put(&http, url, "/api/messages/m", &json!({"text": "two"})).await;
        let deleted = http
            .delete(format!("{url}/api/messages/m"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 200);
        let again = put(&http, url, "/api/messages/m", &json!({"text": "new"})).await;
        assert_eq!(again.status(), 201);
        assert_eq!(
            version(&again),
            "\"4\"",
            "re-created after v1, v2, delete v3"
        );
        let stale = http
            .put(format!("{url}/api/messages/m"))
            .header("if-match", "\"1\"")
            .json(&json!({"text": "stale"}))
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 412);
        let deleted = http
            .delete(format!("{url}/api/messages/m"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 200);
    }
    let server = ChildServer::spawn(&data, &[]);
    let after_restart = put(&http, &server.url, "/api/messages/m", &json!({"text": "x"})).await;
    assert_eq!(after_restart.status(), 201);
    assert_eq!(version(&after_restart), "\"6\"");
}

/// `If-None-Match` (RFC 9110 §13.1.2): weak comparison, any tag of a list; a
/// tag that is not one of ours never matches. On a write a match is 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_compares_every_tag_on_reads_and_writes() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    put(&http, url, "/api/messages/n", &json!({"text": "one"})).await;
    put(&http, url, "/api/messages/n", &json!({"text": "two"})).await; // now "2"

    for (tag, expected) in [
        ("\"2\"", 304),
        ("W/\"2\"", 304),
        ("\"1\", \"2\"", 304),
        ("*", 304),
        ("\"abc\"", 200),
        ("\"1\", \"x\"", 200),
        ("W/\"1\"", 200),
    ] {
        let response = http
            .get(format!("{url}/api/messages/n"))
            .header("if-none-match", tag)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            expected,
            "GET If-None-Match: {tag}"
        );
    }

    // A write whose If-None-Match names the current version is refused...
    for tag in ["\"2\"", "W/\"2\"", "\"7\", \"2\"", "*"] {
        let response = http
            .put(format!("{url}/api/messages/n"))
            .header("if-none-match", tag)
            .json(&json!({"text": "refused"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 412, "PUT If-None-Match: {tag} → {body}");
        assert_eq!(
            body["error"]["code"], "version_mismatch",
            "PUT If-None-Match: {tag}"
        );
    }
    // ...and one naming other tags goes ahead.
    for (n, tag) in ["\"abc\"", "\"1\", W/\"x\""].iter().enumerate() {
        let response = http
            .patch(format!("{url}/api/messages/n"))
            .header("if-none-match", *tag)
            .json(&json!({"text": format!("patched {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "PATCH If-None-Match: {tag}");
    }
    let (_, record) = get_json(&http, url, "/api/messages/n").await;
    assert_eq!(record["text"], "patched 1");

    // `*` on a record that does not exist yet still creates it.
    let created = http
        .put(format!("{url}/api/messages/fresh"))
        .header("if-none-match", "*")
        .json(&json!({"text": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    server.stop().await;
}

//! SSE and WebSockets: current state first, then every change, from whichever
//! protocol made it; resuming without gap or duplicate.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_state_then_changes_on_records_and_collections() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    put_seq(&http, url, "/api/signs/a", &json!({"brightness": 1})).await;
    let b_seq = put_seq(&http, url, "/api/signs/b", &json!({"brightness": 2})).await;

    let mut table = SseClient::connect(&format!("{url}/api/signs/"), None).await;
    let state = table.until_sync().await;
    let ids: Vec<Value> = state[..2].iter().map(|e| e.json()["id"].clone()).collect();
    assert_eq!(ids, vec![json!("a"), json!("b")]);
    assert!(
        state[..2]
            .iter()
            .all(|e| e.kind() == "put" && e.id.is_none())
    );
    assert_eq!(state[2].kind(), "sync");
    // The sync position covers every write made before it (and, below, none
    // made after it); a resume from it neither repeats nor skips.
    let synced = state[2].seq().expect("sync has an id");
    assert!(
        synced >= b_seq,
        "sync {synced} before the last write {b_seq}"
    );

    let mut record = SseClient::connect(&format!("{url}/api/signs/a"), None).await;
    let state = record.until_sync().await;
    assert_eq!(state.len(), 2);
    assert_eq!(state[0].json()["value"]["brightness"], 1);

    let b_again = put_seq(&http, url, "/api/signs/b", &json!({"brightness": 3})).await;
    let deleted: Value = http
        .delete(format!("{url}/api/signs/a"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delete_seq = seq_of(&deleted);
    assert!(
        synced < b_again,
        "sync {synced} covers a later write {b_again}"
    );
    assert_strictly_increasing(&[b_again, delete_seq], "the two writes");

    // Each change carries, as its id, the seq its write was answered with.
    let change = table.next().await.unwrap();
    assert_eq!(
        (change.kind().as_str(), change.seq()),
        ("put", Some(b_again))
    );
    assert_eq!(change.json()["value"]["brightness"], 3);
    let change = table.next().await.unwrap();
    assert_eq!(
        (change.kind().as_str(), change.seq()),
        ("delete", Some(delete_seq))
    );

    // The record stream sees only its own record.
    let change = record.next().await.unwrap();
    assert_eq!(
        (change.kind().as_str(), change.seq()),
        ("delete", Some(delete_seq))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_from_last_event_id_with_exactly_the_missed_changes() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    let stream_url = format!("{url}/api/messages/");
    let mut sse = SseClient::connect(&stream_url, None).await;
    sse.until_sync().await;
    // (text, seq) of every message written, as the server answered each write.
    let mut written = Vec::new();
    for i in 0..5 {
        let seq = put_seq(
            &http,
            url,
            &format!("/api/messages/m{}", i % 2),
            &json!({"text": i.to_string()}),
        )
        .await;
        written.push((json!(i.to_string()), seq));
        put_seq(&http, url, "/api/signs/other", &json!({"brightness": i})).await;
    }
    let mut last_id = None;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = sse.next().await.unwrap();
        seen.push((event.json()["value"]["text"].clone(), event.seq().unwrap()));
        last_id = event.id.clone();
    }
    assert_eq!(
        seen, written,
        "live: each write once, in order, with its seq"
    );
    drop(sse);

    // Writes continue while the client is away.
    let mut missed = Vec::new();
    for i in 5..12 {
        let seq = put_seq(
            &http,
            url,
            &format!("/api/messages/m{}", i % 3),
            &json!({"text": i.to_string()}),
        )
        .await;
        missed.push((json!(i.to_string()), seq));
        put_seq(&http, url, "/api/signs/other", &json!({"brightness": i})).await;
    }
    let mut sse = SseClient::connect(&stream_url, last_id.as_deref()).await;
    let replay = sse.until_sync().await;
    // Exactly the missed changes, each once, in order: compared with what was
    // written (counted), not with seq arithmetic, which has gaps on etcd.
    let replayed: Vec<(Value, u64)> = replay
        .iter()
        .filter(|e| e.kind() == "put")
        .map(|e| {
            let seq = e.seq().expect("a replayed change has an id");
            (e.json()["value"]["text"].clone(), seq)
        })
        .collect();
    assert_eq!(replayed, missed);
    let synced = replay.last().unwrap().seq().expect("sync has an id");
    assert!(synced >= missed.last().unwrap().1, "{replay:?}");

    // And live changes follow, with no duplicate of what was replayed.
    let seq = put_seq(&http, url, "/api/messages/m9", &json!({"text": "12"})).await;
    let live = sse.next().await.unwrap();
    assert_eq!(live.json()["value"]["text"], "12");
    assert_eq!(live.seq(), Some(seq));
    assert!(seq > synced);

    // A Last-Event-ID from before the retained window starts over from the state.
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_beyond_the_change_log_resets_to_current_state() {
    let server = TestServer::start_with(|c| c.change_log_window = 3).await;
    let http = client();
    let url = &server.url;
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(put_seq(&http, url, "/api/signs/x", &json!({"brightness": i})).await);
    }
    assert_strictly_increasing(&seqs, "ten writes");
    // After the second write: seven changes ago, beyond a window of three.
    let (status, body) = get_json(&http, url, &format!("/api/changes?since={}", seqs[1])).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["code"], "resume_gap");
    // A resume at the window's edge: exactly the changes after it. The
    // window counts seqs, and on etcd other keys' revisions (a node's
    // start-up, its roles) take seqs too, so the edge is counted back from
    // the last seq the server reports; where the writes took every seq
    // (always on the embedded store) it is the seventh write's, and what
    // follows it the last three.
    let (status, page) = get_json(&http, url, &format!("/api/changes?since={}", seqs[9])).await;
    assert_eq!(status, 200);
    let head = page["last_seq"].as_u64().expect("last_seq");
    let edge = head - 3;
    let (status, page) = get_json(&http, url, &format!("/api/changes?since={edge}")).await;
    assert_eq!(
        status, 200,
        "a resume from {edge}, the last seq being {head}"
    );
    let got = changes_with(&page, "brightness");
    let want: Vec<(u64, Value)> = (0..10)
        .filter(|&i| seqs[i] > edge)
        .map(|i| (seqs[i], json!(i)))
        .collect();
    assert_eq!(got, want);
    if head - seqs[0] == 9 {
        assert_eq!(want.len(), 3, "no other seqs: the last three writes");
    }

    let first = seqs[0].to_string();
    let mut sse = SseClient::connect(&format!("{url}/api/signs/"), Some(&first)).await;
    let events = sse.until_sync().await;
    assert_eq!(events[0].kind(), "reset");
    assert_eq!(events[0].json()["code"], "resume_gap");
    assert_eq!(events[1].json()["value"]["brightness"], 9);
    assert_eq!(events.len(), 3, "{events:?}");
    let synced = events.last().unwrap().seq().expect("sync has an id");
    assert!(synced >= seqs[9], "{events:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_websocket_sends_state_and_takes_writes_with_acks() {
    let server = TestServer::start().await;
    let http = client();
    let made = put_seq(
        &http,
        &server.url,
        "/api/signs/lobby",
        &json!({"name": "Lobby"}),
    )
    .await;

    let mut ws = WsClient::connect(&server.ws_url("/api/signs/lobby")).await;
    let state = ws.until_sync().await;
    assert_eq!(state[0]["type"], "put");
    assert_eq!(state[0]["value"]["name"], "Lobby");
    assert_eq!(
        state[0]["origin"], "rest",
        "state carries the origin of the write that made it"
    );
    let synced = seq_of(&state[1]);
    assert_eq!(state[1], json!({"type": "sync", "seq": synced}));
    assert!(synced >= made, "sync {synced} before the write {made}");

    ws.send(json!({"type": "patch", "req": "p1", "value": {"brightness": 9}}))
        .await;
    let mut others = Vec::new();
    let ack = ws.reply("p1", &mut others).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["version"], 2);
    assert!(seq_of(&ack) > synced, "{ack}");

    ws.send(json!({"type": "put", "req": "bad", "value": {"name": "x"}, "if_match": 1}))
        .await;
    let refused = ws.reply("bad", &mut others).await;
    assert_eq!(refused["error"]["code"], "version_mismatch");

    ws.send(json!({"type": "put", "req": "elsewhere", "id": "other", "value": {}}))
        .await;
    let refused = ws.reply("elsewhere", &mut others).await;
    assert_eq!(refused["error"]["code"], "bad_message");

    ws.send(json!({"type": "fly"})).await;
    let refused = ws.next().await.unwrap();
    let refused = if refused["type"] == "patch" {
        ws.next().await.unwrap()
    } else {
        refused
    };
    assert_eq!(refused["error"]["code"], "bad_message");

    let (_, body) = get_json(&http, &server.url, "/api/signs/lobby").await;
    assert_eq!(
        (&body["name"], &body["brightness"]),
        (&json!("Lobby"), &json!(9))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_websocket_subscribes_unsubscribes_writes_and_resumes() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    let s1_made = put_seq(&http, url, "/api/signs/s1", &json!({"brightness": 0})).await;

    let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
    ws.send(json!({"type": "subscribe", "req": "1", "filter": "signs/+"}))
        .await;
    let got = ws.until_sync().await;
    assert_eq!(got[0], json!({"type": "ack", "req": "1"}));
    assert_eq!(got[1]["id"], "s1");
    let synced = seq_of(&got[2]);
    assert_eq!(got[2], json!({"type": "sync", "req": "1", "seq": synced}));
    assert!(
        synced >= s1_made,
        "sync {synced} before the write {s1_made}"
    );

    ws.send(json!({"type": "subscribe", "req": "2", "filter": "messages/#"}))
        .await;
    ws.until_sync().await;

    ws.send(
        json!({"type": "put", "req": "w", "table": "messages", "id": "m", "value": {"text": "hi"}}),
    )
    .await;
    let mut events = Vec::new();
    let ack = ws.reply("w", &mut events).await;
    let w_seq = seq_of(&ack);
    assert!(w_seq > synced, "{ack}");
    while events.is_empty() {
        events.push(ws.next().await.unwrap());
    }
    assert_eq!(events[0]["type"], "put");
    assert_eq!(events[0]["origin"], "ws");
    assert_eq!(seq_of(&events[0]), w_seq, "the change has the acked seq");

    ws.send(json!({"type": "unsubscribe", "req": "3", "filter": "messages/#"}))
        .await;
    let mut rest = Vec::new();
    assert_eq!(ws.reply("3", &mut rest).await["type"], "ack");
    put_seq(&http, url, "/api/messages/m", &json!({"text": "unseen"})).await;
    let s1_again = put_seq(&http, url, "/api/signs/s1", &json!({"brightness": 1})).await;
    let next = ws.next().await.unwrap();
    assert_eq!(
        next["table"], "signs",
        "unsubscribed table is not delivered: {next}"
    );
    assert_eq!(seq_of(&next), s1_again);

    ws.send(json!({"type": "subscribe", "req": "4", "filter": "signs/#/x"}))
        .await;
    let refused = ws.reply("4", &mut rest).await;
    assert_eq!(refused["error"]["code"], "bad_filter");
    drop(ws);

    // Resume on a new socket from the first sync: exactly the signs changes
    // after it, each once, as written (not counted off from the seq).
    let s2_made = put_seq(&http, url, "/api/signs/s2", &json!({"brightness": 2})).await;
    let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
    ws.send(json!({"type": "subscribe", "req": "r", "filter": "signs/+", "since": synced}))
        .await;
    let got = ws.until_sync().await;
    let replayed: Vec<(Value, Value, u64)> = got
        .iter()
        .filter(|m| m["type"] == "put")
        .map(|m| (m["id"].clone(), m["value"]["brightness"].clone(), seq_of(m)))
        .collect();
    assert_eq!(
        replayed,
        vec![
            (json!("s1"), json!(1), s1_again),
            (json!("s2"), json!(2), s2_made)
        ]
    );
    assert!(seq_of(got.last().unwrap()) >= s2_made, "{got:?}");

    // A resume point the server never reached is refused.
    let future = s2_made + 1_000_000;
    ws.send(json!({"type": "subscribe", "req": "old", "filter": "x/+", "since": future}))
        .await;
    let refused = ws.reply("old", &mut rest).await;
    assert_eq!(refused["error"]["code"], "resume_gap");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_write_reaches_sse_and_websockets() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    let mut sse = SseClient::connect(&format!("{url}/api/signs/lobby"), None).await;
    sse.until_sync().await;
    let mut record_ws = WsClient::connect(&server.ws_url("/api/signs/lobby")).await;
    record_ws.until_sync().await;
    let mut mux = WsClient::connect(&server.ws_url("/api/ws")).await;
    mux.send(json!({"type": "subscribe", "req": "s", "filter": "signs/#"}))
        .await;
    mux.until_sync().await;

    let made = put_seq(
        &http,
        url,
        "/api/signs/lobby",
        &json!({"name": "from rest"}),
    )
    .await;

    let via_sse = sse.next().await.unwrap().json();
    let via_ws = record_ws.next().await.unwrap();
    let via_mux = mux.next().await.unwrap();
    for event in [&via_sse, &via_ws, &via_mux] {
        assert_eq!(event["value"]["name"], "from rest");
        assert_eq!(event["origin"], "rest");
        assert_eq!(seq_of(event), made, "the seq the write was answered with");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_write_reaches_rest_sse_and_other_websockets() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    let mut sse = SseClient::connect(&format!("{url}/api/messages/"), None).await;
    sse.until_sync().await;
    let mut watcher = WsClient::connect(&server.ws_url("/api/ws")).await;
    watcher
        .send(json!({"type": "subscribe", "filter": "messages/+"}))
        .await;
    watcher.until_sync().await;

    let mut writer = WsClient::connect(&server.ws_url("/api/messages/")).await;
    writer.until_sync().await;
    writer
        .send(json!({"type": "put", "req": "1", "id": "hello", "value": {"text": "from ws"}}))
        .await;
    let mut others = Vec::new();
    let ack = writer.reply("1", &mut others).await;
    assert_eq!(ack["type"], "ack");

    let (status, body) = get_json(&http, url, "/api/messages/hello").await;
    assert_eq!((status, &body["text"]), (200, &json!("from ws")));
    let via_sse = sse.next().await.unwrap().json();
    let via_ws = watcher.next().await.unwrap();
    for event in [&via_sse, &via_ws] {
        assert_eq!(event["value"]["text"], "from ws");
        assert_eq!(event["origin"], "ws");
    }

    writer
        .send(json!({"type": "publish", "req": "2", "id": "hello", "value": {"blink": 1}}))
        .await;
    let ack = writer.reply("2", &mut others).await;
    assert_eq!(ack["type"], "ack");
    let published = watcher.next().await.unwrap();
    assert_eq!(published["type"], "publish");
    assert!(published.get("seq").is_none());
    assert_eq!(sse.next().await.unwrap().kind(), "publish");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_writes_and_closes_streams() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ChildServer::spawn(&data, &[]);
    let http = client();
    let url = server.url.clone();
    let mut sse = SseClient::connect(&format!("{url}/api/signs/"), None).await;
    sse.until_sync().await;
    let mut ws = WsClient::connect(&format!("{}/api/ws", url.replacen("http", "ws", 1))).await;

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..200 {
                    match http
                        .put(format!("{url}/api/signs/w{w}-{i}"))
                        .json(&json!({"name": i.to_string()}))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => acked.push(format!("w{w}-{i}")),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid = server.pid();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");

    // Streams end rather than hang.
    while sse.next().await.is_some() {}
    assert!(ws.next().await.is_none());

    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let server = ChildServer::spawn(&data, &[]);
    for id in &acked {
        let (status, _) = get_json(&http, &server.url, &format!("/api/signs/{id}")).await;
        assert_eq!(status, 200, "acknowledged write {id} survived shutdown");
    }
    assert!(!acked.is_empty());
}

#[tokio::test]
async fn past_the_connection_limit_a_client_is_told_503_and_a_freed_slot_is_reused() {
    // http_max_connections caps each node's own open connections: behind
    // a balancer each node holds its own share.
    let _one = common::one_node();
    let server = TestServer::start_with(|config| config.http_max_connections = 2).await;
    let stream_url = format!("{}/api/signs/", server.url);
    let first = SseClient::connect(&stream_url, None).await;
    let _second = SseClient::connect(&stream_url, None).await;

    // A third connection, while both streams hold theirs.
    let http = reqwest::Client::new();
    let refused = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("an answer, not a reset");
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "too_many_connections");

    // Ending one stream frees its slot (the server notices the close shortly).
    drop(first);
    let mut status = 0;
    for _ in 0..50 {
        let fresh = reqwest::Client::new();
        status = fresh
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    server.stop().await;
}

/// A plain `EventSource` listens with `onmessage`, which only sees unnamed
/// events: records and changes carry no `event:` field (the type is in the
/// data), while control events (`sync`) are named so `onmessage` ignores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_records_and_changes_are_unnamed_events_with_ids() {
    let server = TestServer::start().await;
    let http = client();
    let url = &server.url;
    put(&http, url, "/api/signs/a", &json!({"brightness": 1})).await;

    let mut stream = SseClient::connect(&format!("{url}/api/signs/"), None).await;
    let state = stream.until_sync().await;
    assert_eq!(state.len(), 2, "{state:?}");
    assert_eq!(state[0].event, "message", "{state:?}");
    assert_eq!(state[0].json()["type"], "put");
    assert_eq!(state[1].event, "sync");

    let made = put_seq(&http, url, "/api/signs/a", &json!({"brightness": 2})).await;
    http.post(format!("{url}/api/signs/a/publish"))
        .json(&json!({"ping": 1}))
        .send()
        .await
        .unwrap();
    let change = stream.next().await.unwrap();
    assert_eq!(change.event, "message", "{change:?}");
    assert_eq!(change.seq(), Some(made));
    assert_eq!(change.json()["type"], "put");
    let published = stream.next().await.unwrap();
    assert_eq!(published.event, "message", "{published:?}");
    assert_eq!(published.json()["type"], "publish");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_websockets_interleaved_writes_and_publishes_arrive_and_are_acked_in_order() {
    const N: usize = 1000;
    let server = TestServer::start().await;
    let http = client();
    let declared = http
        .post(format!("{}/api/_tables", server.url))
        .json(&json!({"name": "counters"}))
        .send()
        .await
        .unwrap();
    assert!(declared.status().is_success(), "{}", declared.status());

    let mut watcher = WsClient::connect(&server.ws_url("/api/counters/c")).await;
    watcher.until_sync().await;
    let mut writer = WsClient::connect(&server.ws_url("/api/ws")).await;

    let kind = |i: usize| ["put", "patch", "publish"][i % 3];
    // Everything sent at once, without waiting for a single ack.
    let mut frames = Vec::with_capacity(N);
    for i in 0..N {
        let message = json!({"type": kind(i), "req": i.to_string(), "table": "counters", "id": "c", "value": {"n": i}});
        frames.push(Ok(tokio_tungstenite::tungstenite::Message::Text(
            message.to_string().into(),
        )));
    }
    let mut frames = futures_util::stream::iter(frames);
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::SinkExt::send_all(&mut writer.socket, &mut frames),
    )
    .await
    .expect("sent in time")
    .unwrap();

    let mut acks = Vec::with_capacity(N);
    for _ in 0..N {
        let reply = writer.next().await.expect("a reply for every request");
        assert_eq!(reply["type"], "ack", "{reply}");
        acks.push(reply["req"].as_str().unwrap().parse::<usize>().unwrap());
    }
    assert_eq!(
        acks,
        (0..N).collect::<Vec<_>>(),
        "acks come back in request order"
    );

    let mut seen = Vec::with_capacity(N);
    for _ in 0..N {
        let change = watcher.next().await.expect("every change is delivered");
        seen.push((
            change["type"].as_str().unwrap().to_owned(),
            change["value"]["n"].as_u64().unwrap() as usize,
        ));
    }
    let sent: Vec<_> = (0..N).map(|i| (kind(i).to_owned(), i)).collect();
    let first_wrong = seen.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(
        first_wrong, None,
        "the subscriber sees exactly the order the socket sent (first difference at {first_wrong:?})"
    );
    assert!(
        watcher
            .next_within(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "nothing more than was sent"
    );
    server.stop().await;
}

/// Writes a socket sent before shutdown are committed and acknowledged, in
/// order, before the socket is closed; the socket then closes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_writes_in_flight_at_shutdown_are_acknowledged_then_the_socket_closes() {
    const N: usize = 300;
    let mut server = TestServer::start().await;
    let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
    let mut frames = Vec::with_capacity(N);
    for i in 0..N {
        let message = json!({"type": "put", "req": i.to_string(), "table": "signs", "id": format!("s{i}"), "value": {"name": i.to_string()}});
        frames.push(Ok(tokio_tungstenite::tungstenite::Message::Text(
            message.to_string().into(),
        )));
    }
    let mut frames = futures_util::stream::iter(frames);
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::SinkExt::send_all(&mut ws.socket, &mut frames),
    )
    .await
    .expect("sent in time")
    .unwrap();
    let first = ws.next().await.expect("a first ack");
    assert_eq!(
        (&first["type"], &first["req"]),
        (&json!("ack"), &json!("0"))
    );

    let running = server.server.take().unwrap();
    let stopping = tokio::spawn(running.shutdown());
    let mut acked = vec![0usize];
    while let Some(reply) = ws.next_within(std::time::Duration::from_secs(10)).await {
        assert_eq!(reply["type"], "ack", "{reply}");
        acked.push(reply["req"].as_str().unwrap().parse().unwrap());
        assert!(acked.len() <= N);
    }
    assert_eq!(
        acked,
        (0..acked.len()).collect::<Vec<_>>(),
        "acks in order, none missing"
    );
    eprintln!("{} of {N} writes acknowledged around shutdown", acked.len());
    tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .expect("shutdown is prompt")
        .unwrap();

    let mut config =
        marquee::Config::new(data_path(&server.dir), "127.0.0.1:0".parse().unwrap()).unwrap();
    config.access =
        marquee::access::Access::new(marquee::access::Mode::Open, true, Vec::new()).unwrap();
    common::on_test_store(&mut config);
    let again = marquee::Server::start(config).await.unwrap();
    let url = format!("http://{}", again.http_addr());
    let http = client();
    for i in &acked {
        let (status, body) = get_json(&http, &url, &format!("/api/signs/s{i}")).await;
        assert_eq!(status, 200, "acknowledged write s{i} is durable");
        assert_eq!(body["name"], i.to_string());
    }
    again.shutdown().await;
}

/// An SSE client that stops reading does not hold up shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_stops_reading_does_not_hold_up_shutdown() {
    use tokio::io::AsyncWriteExt;
    let mut server = TestServer::start().await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let http = client();
    let declared = http
        .post(format!("{}/api/_tables", server.url))
        .json(&json!({"name": "blobs"}))
        .send()
        .await
        .unwrap();
    assert!(declared.status().is_success());
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /api/signs/ HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Far more than the socket buffers hold, never read.
    let big = "x".repeat(12000);
    for i in 0..1000 {
        let response = http
            .put(format!("{}/api/blobs/b{}", server.url, i % 50))
            .json(&json!({"blob": big}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let running = server.server.take().unwrap();
    let started = std::time::Instant::now();
    let stopped =
        tokio::time::timeout(std::time::Duration::from_secs(20), running.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown hung on a client that does not read"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    eprintln!("shutdown took {:?}", started.elapsed());
    drop(stalled);
}

/// A WebSocket subscriber that stops reading does not hold up shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_stops_reading_does_not_hold_up_shutdown() {
    let mut server = TestServer::start().await;
    let http = client();
    let declared = http
        .post(format!("{}/api/_tables", server.url))
        .json(&json!({"name": "blobs"}))
        .send()
        .await
        .unwrap();
    assert!(declared.status().is_success());
    let mut stalled = WsClient::connect(&server.ws_url("/api/blobs/")).await;
    stalled.until_sync().await;
    // Far more than the socket buffers hold, never read.
    let big = "x".repeat(12000);
    for i in 0..1000 {
        let response = http
            .put(format!("{}/api/blobs/b{}", server.url, i % 50))
            .json(&json!({"blob": big}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let running = server.server.take().unwrap();
    let started = std::time::Instant::now();
    let stopped =
        tokio::time::timeout(std::time::Duration::from_secs(20), running.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown hung on a socket that does not read"
    );
    eprintln!("shutdown took {:?}", started.elapsed());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    drop(stalled);
}

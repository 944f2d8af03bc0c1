//! SPIKE (issue 11): two in-process Marquee servers with their records on
//! one three-member etcd: a REST write on A reaches SSE on B, with A's seq.

mod common;

use common::etcd::EtcdCluster;
use common::{SseClient, TestServer, client, put};
use serde_json::{Value, json};

async fn server_on(cluster: &EtcdCluster) -> TestServer {
    let endpoints = cluster.endpoints();
    TestServer::start_with(move |config| {
        config.store = marquee::store::StoreAddress::Etcd(marquee::store::EtcdAddress {
            endpoints,
            prefix: "/marquee/".into(),
        });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_write_on_a_is_an_sse_event_on_b_with_the_same_seq() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let http = client();

    let mut on_b = SseClient::connect(&format!("{}/api/signs/", b.url), None).await;
    let state = on_b.until_sync().await;
    assert_eq!(state.len(), 1, "empty, then sync: {state:?}");

    let response = put(&http, &a.url, "/api/signs/lobby", &json!({"name": "Lobby"})).await;
    assert_eq!(response.status(), 201);
    let written: Value = response.json().await.expect("json");
    eprintln!("PUT on A answered {written}");
    let seq = written["seq"].as_u64().expect("a seq in the answer");

    let event = on_b.next().await.expect("an event on B");
    assert_eq!(event.kind(), "put");
    assert_eq!(event.id.as_deref(), Some(seq.to_string().as_str()));
    assert_eq!(event.json()["value"]["name"], "Lobby");

    // Resume on B from a seq A made, at once (B may not have applied it yet).
    let response = put(&http, &a.url, "/api/signs/lobby", &json!({"name": "Hall"})).await;
    let second: Value = response.json().await.expect("json");
    let second = second["seq"].as_u64().expect("seq");
    let mut resumed =
        SseClient::connect(&format!("{}/api/signs/", b.url), Some(&seq.to_string())).await;
    let event = resumed
        .next()
        .await
        .expect("the change after the resume point");
    assert_eq!(event.id.as_deref(), Some(second.to_string().as_str()));
    assert_eq!(event.json()["value"]["name"], "Hall");

    a.stop().await;
    b.stop().await;
}

//! MQTT over WebSocket (subprotocol `mqtt`) at `/mqtt` on the HTTP port, so
//! browser MQTT clients need no other port. Each binary frame carries MQTT
//! bytes; a pair of pumps turns the socket into a byte stream for the same
//! connection code TCP clients get. A browser page signed in with its
//! session cookie (from one of our origins) needs no MQTT password.

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::Broker;
use crate::auth::RequestRefusal;
use crate::http::Peer;

/// Bytes buffered between the socket and the connection, each way.
const PIPE: usize = 64 * 1024;

/// The `/mqtt` route.
pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/mqtt", get(upgrade))
        .with_state(broker)
}

async fn upgrade(
    State(broker): State<Broker>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ambient = match broker
        .guard()
        .principal_for_request(&headers, peer.local, true)
        .await
    {
        Ok(principal) => (!principal.is_anonymous()).then_some(principal),
        Err(refusal) => return refused(&refusal),
    };
    let peer = peer.remote;
    let max = broker.limits().max_packet_size;
    crate::http::lean_websocket(ws.protocols(["mqtt"]), max)
        .on_upgrade(move |socket| async move {
            // Counted like a TCP connection, so shutdown waits for its last writes.
            let _running = broker.tasks().token();
            let (ours, theirs) = tokio::io::duplex(PIPE);
            tokio::spawn(pump(socket, theirs));
            broker.serve_stream(ours, peer, ambient).await;
        })
        .into_response()
}

/// The upgrade's refusal, as the HTTP API words it: 401 for a cookie that
/// is no longer valid, 403 for a page that is not ours.
fn refused(refusal: &RequestRefusal) -> Response {
    let (status, code, message) = match refusal {
        RequestRefusal::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the session is not valid; sign in again",
        ),
        RequestRefusal::BadOrigin => (
            StatusCode::FORBIDDEN,
            "bad_origin",
            "this request must come from a page of this server (Origin)",
        ),
        RequestRefusal::Internal(e) => {
            tracing::error!("cannot check a session: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "auth",
                "cannot check the session",
            )
        }
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// Moves bytes between the WebSocket and the connection until either ends.
async fn pump(socket: WebSocket, pipe: DuplexStream) {
    let (mut sink, mut stream) = socket.split();
    let (mut from_connection, mut to_connection) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(Ok(message)) = stream.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                // MQTT is binary; text frames are a client error [MQTT-6.0.0-1].
                Message::Text(_) => break,
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if to_connection.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_connection.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; PIPE];
        loop {
            match from_connection.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = bytes::Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    if sink.send(Message::Binary(chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

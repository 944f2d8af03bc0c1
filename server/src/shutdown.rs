//! The server-wide stop signal: a `watch` flag that flips to `true` once, when
//! shutdown begins. Every long-running task (connections, streams, the player)
//! races its work against [`stopped`].

use tokio::sync::watch;

/// Resolves once the server has begun shutting down.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

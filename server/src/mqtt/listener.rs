//! Where MQTT connections come in: the TCP listener, and any byte stream the
//! HTTP side hands over (MQTT over WebSocket). Each runs as a task that
//! shutdown waits for.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::broker::Broker;
use super::connection;
use crate::auth::Principal;
use crate::store::ClientEvent;

impl Broker {
    /// Accepts TCP connections until shutdown, with the broker's
    /// housekeeping (expired sessions, `$SYS` statistics) beside it.
    pub async fn serve(self, listener: TcpListener) {
        let mut shutdown = self.shutdown_signal();
        let sweeper = tokio::spawn(self.clone().sweep_expired_sessions());
        let other_nodes = tokio::spawn(self.clone().follow_other_nodes());
        let statistics = tokio::spawn(super::sys::publish_statistics(
            self.clone(),
            self.limits().sys_interval,
        ));
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let broker = self.clone();
                        self.tasks().spawn(async move { broker.serve_stream(stream, peer, None).await });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!("MQTT accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        sweeper.abort();
        other_nodes.abort();
        statistics.abort();
    }

    /// Acts on what other nodes do with this node's clients, for as long as
    /// the store tells of it (embedded: never): a client claimed elsewhere
    /// has its connection here closed, and a dead node's client's will that
    /// this node won is sent.
    async fn follow_other_nodes(self) {
        let mut events = self.store().client_events();
        while let Some(event) = events.recv().await {
            // Each in its own task: a takeover waits for its connection to
            // close, a will for its delay, and others should not wait.
            let broker = self.clone();
            match event {
                ClientEvent::TakenOver {
                    client_id,
                    revision,
                } => self.tasks().spawn(async move {
                    broker.taken_over_elsewhere(&client_id, revision).await;
                }),
                ClientEvent::WillOrphaned { client_id, will } => self
                    .tasks()
                    .spawn(connection::send_orphaned_will(broker, client_id, will)),
            };
        }
    }

    /// Runs one MQTT connection over any byte stream (TCP, or a WebSocket's).
    /// `ambient`: who the stream's opener already proved to be (a WebSocket
    /// upgrade with a session cookie), for a CONNECT without credentials.
    pub async fn serve_stream<S>(&self, stream: S, peer: SocketAddr, ambient: Option<Principal>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        connection::run(self.clone(), stream, peer, ambient).await;
    }
}

//! A cap on open HTTP connections. Streams (SSE, WebSockets, MQTT over
//! WebSocket) hold a connection for as long as they run, so without a cap a
//! client could hold sockets and tasks until the process runs out of them.
//! Past the cap a connection gets a 503 with a JSON error and is closed, so
//! the client learns why instead of waiting in the listen backlog.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{self, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that hands out at most `max` connections at a time.
pub struct LimitedListener {
    inner: TcpListener,
    open: Arc<Semaphore>,
}

/// An accepted connection; its slot frees when it is dropped.
pub struct LimitedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// What a connection past the cap is told.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 94\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server's connection limit is reached\"}}";

/// How long a refused connection is drained, so the refusal is not lost to a reset.
const DRAIN: Duration = Duration::from_secs(1);

impl LimitedListener {
    pub fn new(inner: TcpListener, max: usize) -> Self {
        Self {
            inner,
            open: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
        }
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            // Events and replies are small writes: Nagle's algorithm would
            // hold each behind the acknowledgement of the one before.
            let _ = stream.set_nodelay(true);
            match Arc::clone(&self.open).try_acquire_owned() {
                Ok(slot) => {
                    return (
                        LimitedStream {
                            stream,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                Err(_) => {
                    tracing::warn!(%addr, "HTTP connection refused: the connection limit is reached");
                    tokio::spawn(refuse(stream));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Answers the request with 503 and closes. The answer waits for the
/// request (HTTP clients treat an answer before their request as an error),
/// and what else the client sends is read and dropped for a moment: closing a
/// socket with unread data makes the kernel send a reset, which can reach the
/// client before the answer does.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(DRAIN, async {
        let mut scratch = [0u8; 1024];
        if stream.read(&mut scratch).await? == 0 {
            return Ok(());
        }
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        // Until the client closes its side, or the time is up.
        while stream.read(&mut scratch).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

impl LimitedStream {
    /// Waits until the client has sent something (or closed).
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Reads what is there without waiting (`WouldBlock` if nothing is).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.try_read(buf)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::REFUSAL;

    #[test]
    fn the_refusal_declares_its_body_length() {
        let text = std::str::from_utf8(REFUSAL).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let declared = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse::<usize>().ok());
        assert_eq!(declared, Some(body.len()));
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}

/// Where a request came from and the address it arrived at, for handlers
/// that need them (`ConnectInfo<Peer>`): the sign-in throttle counts
/// failures per address, and a page served from the address a connection
/// arrived at is one of ours (the Origin rule).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
}

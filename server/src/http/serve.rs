//! The HTTP accept loop: what `axum::serve` did (a task per connection,
//! HTTP/1.1 with upgrades, `ConnectInfo<Peer>`, graceful shutdown that waits
//! for every connection), plus one thing it cannot do: a keep-alive
//! connection between requests holds no HTTP state at all.
//!
//! hyper keeps an 8 KiB write buffer and one or two 8 KiB read buffers per
//! connection for as long as the connection lives, and none of them can be
//! made smaller; with 2,500 idle keep-alive clients that was 21 KiB each.
//! So once hyper has nothing to do (no request in flight, every request body
//! read to its end, nothing left to write, and it is waiting for the client's
//! next bytes), the connection is taken apart ([`UpgradeableConnection::into_parts`]):
//! the task waits for the socket to become readable with nothing but the
//! socket, and serves the next request with a fresh hyper connection.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Version, header};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::limit::{LimitedListener, LimitedStream, Peer};
use super::poll_again::PollAgain;
use crate::auth::Guard;
use crate::shutdown::stopped;

/// Serves `router` on `listener` until `stop` turns true, then lets every
/// open connection finish its current response (idle ones close at once)
/// and returns when all have closed. `guard` refuses requests for host
/// names not ours ([`super::host_refusal`]) before they are routed.
pub async fn serve(
    mut listener: LimitedListener,
    router: Router,
    guard: Guard,
    stop: watch::Receiver<bool>,
) {
    let connections = TaskTracker::new();
    let mut stopping = stop.clone();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            _ = stopped(&mut stopping) => break,
        };
        let peer = Peer {
            remote,
            local: stream.local_addr().ok(),
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            guard.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One client connection, from accept to close.
async fn connection(
    stream: LimitedStream,
    peer: Peer,
    router: Router,
    guard: Guard,
    stop: watch::Receiver<bool>,
) {
    let probe = Arc::new(Probe::default());
    serve_connection(stream, peer, router, guard, stop, &probe).await;
    // An event stream not yet taken over holds the probe: break the cycle.
    drop(probe.lock_handoff().take());
}

/// How a hyper connection stopped being polled.
enum Outcome {
    /// It finished: the client closed, an error, an upgrade, or shutdown.
    Closed,
    /// It waits for the client's next request and holds nothing else.
    Idle,
    /// It wrote the head of an event stream, whose body we now write.
    EventStream,
}

async fn serve_connection(
    stream: LimitedStream,
    peer: Peer,
    router: Router,
    guard: Guard,
    mut stop: watch::Receiver<bool>,
    probe: &Arc<Probe>,
) {
    let mut io = Watched {
        stream,
        unread: Bytes::new(),
        probe: probe.clone(),
    };
    // Whether the next request must come from the socket (rather than
    // from `io.unread`, which may hold a whole one).
    let mut wait_for_client = true;
    let again = PollAgain::default();
    loop {
        // Between requests: only the socket, until the client sends more.
        if wait_for_client {
            tokio::select! {
                ready = io.stream.readable() => if ready.is_err() { return },
                _ = stopped(&mut stop) => return,
            }
        }
        let service = Service {
            router: router.clone(),
            guard: guard.clone(),
            peer,
            probe: probe.clone(),
        };
        // Boxed: the parked task then holds a pointer, not hyper's state.
        let mut http = Box::new(
            http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        let mut shutting_down = false;
        let outcome = loop {
            tokio::select! {
                outcome = poll_fn(|cx| match again.poll(cx, |cx| Pin::new(&mut *http).poll(cx)) {
                    Poll::Ready(result) => {
                        if let Err(e) = result {
                            tracing::trace!("HTTP connection from {} ended: {e}", peer.remote);
                        }
                        Poll::Ready(Outcome::Closed)
                    }
                    Poll::Pending if probe.stream_ready() => Poll::Ready(Outcome::EventStream),
                    Poll::Pending if !shutting_down && probe.idle() => Poll::Ready(Outcome::Idle),
                    Poll::Pending => Poll::Pending,
                }) => break outcome,
                _ = stopped(&mut stop), if !shutting_down => {
                    // Ends keep-alive: an idle connection closes now, a
                    // busy one after its response.
                    shutting_down = true;
                    Pin::new(&mut *http).graceful_shutdown();
                }
            }
        };
        if matches!(outcome, Outcome::Closed) {
            return;
        }
        let Some(parts) = http.into_parts() else {
            return;
        };
        let http1::Parts {
            io: inner,
            read_buf,
            ..
        } = parts;
        io = inner.into_inner();
        // Bytes hyper read but had not parsed: the start of a request (or,
        // after an event stream's head, possibly a whole one), handed to the
        // next connection first. Copied, and hyper's whole 8 KiB read buffer
        // they sit in dropped now, not after an event stream.
        io.unread = Bytes::copy_from_slice(&read_buf);
        drop(read_buf);
        wait_for_client = true;
        if let Outcome::EventStream = outcome {
            probe.handoff_asked.store(false, Ordering::Relaxed);
            let Some(handoff) = probe.lock_handoff().take() else {
                return;
            };
            // Boxed: only a streaming connection carries its state.
            if !Box::pin(write_event_stream(&mut io, handoff)).await
                || shutting_down
                || *stop.borrow()
            {
                return;
            }
            wait_for_client = io.unread.is_empty();
        }
    }
}

/// Most bytes of an event stream gathered into one write.
const STREAM_WRITE: usize = 16 * 1024;
/// Most bytes a client may send while its event stream runs (a next request)
/// that are kept for after it; past that they wait in the socket.
const STREAM_READ: usize = 4 * 1024;

/// Writes an event stream's body as HTTP/1.1 chunks, as hyper would have,
/// with no buffer kept between events. Returns whether the connection can
/// serve another request: the body ended and was terminated. Like hyper, the
/// stream ends when the client closes its side.
async fn write_event_stream(io: &mut Watched, stream: Handoff) -> bool {
    use tokio::io::AsyncWriteExt;
    let Handoff {
        mut body,
        keep_alive,
    } = stream;
    let mut client_sent = false;
    loop {
        let frame = tokio::select! {
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            ready = io.stream.readable(), if !client_sent => {
                if ready.is_err() {
                    return false;
                }
                let mut chunk = vec![0u8; STREAM_READ];
                match io.stream.try_read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => {
                        chunk.truncate(n);
                        let mut unread = Vec::with_capacity(io.unread.len() + n);
                        unread.extend_from_slice(&io.unread);
                        unread.extend_from_slice(&chunk);
                        io.unread = Bytes::from(unread);
                        client_sent = true;
                        continue;
                    }
                    // Readiness that was not: wait again.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return false,
                }
            }
        };
        let mut out = Vec::new();
        let mut next = frame;
        loop {
            match next {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        use std::io::Write;
                        let _ = write!(out, "{:X}\r\n", data.len());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("event stream failed: {e}");
                    let _ = io.write_all(&out).await;
                    return false;
                }
                None => {
                    out.extend_from_slice(b"0\r\n\r\n");
                    return io.write_all(&out).await.is_ok() && keep_alive;
                }
            }
            if out.len() >= STREAM_WRITE {
                break;
            }
            // More events already waiting go out in the same write.
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => next = frame,
                Poll::Pending => break,
            }
        }
        if !out.is_empty() && io.write_all(&out).await.is_err() {
            return false;
        }
    }
}

/// What the connection's requests and socket are doing, seen from outside hyper.
#[derive(Default)]
struct Probe {
    /// Requests whose response body has not been dropped yet.
    busy: AtomicUsize,
    /// A request body that was not read to its end: hyper may still be
    /// draining it, so this connection is never taken apart.
    unfinished_body: AtomicBool,
    /// The last read found nothing: hyper is waiting for the client (as
    /// hyper's own `is_read_blocked`).
    waiting_to_read: AtomicBool,
    /// The last write could not go out: hyper still holds bytes to write.
    write_blocked: AtomicBool,
    /// An event stream whose head hyper is writing; we write its body.
    handoff: std::sync::Mutex<Option<Handoff>>,
    /// hyper has written that head and asked for the body.
    handoff_asked: AtomicBool,
}

/// An event stream's body, and whether its connection may serve another
/// request after it.
struct Handoff {
    body: Tracked,
    keep_alive: bool,
}

impl Probe {
    fn lock_handoff(&self) -> std::sync::MutexGuard<'_, Option<Handoff>> {
        self.handoff
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an event stream's head has gone out and its body is ours to write.
    fn stream_ready(&self) -> bool {
        self.handoff_asked.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
            && self.lock_handoff().is_some()
    }

    /// Whether hyper has nothing left to do but wait for the next request.
    fn idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0
            && !self.unfinished_body.load(Ordering::Relaxed)
            && self.waiting_to_read.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
    }
}

/// The socket as hyper sees it: bytes left over from the last hyper
/// connection first, and every read and write noted in the [`Probe`].
struct Watched {
    stream: LimitedStream,
    unread: Bytes,
    probe: Arc<Probe>,
}

impl Watched {
    fn note_write<T>(&self, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        self.probe
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread.split_to(n));
            if self.unread.is_empty() {
                self.unread = Bytes::new();
            }
            self.probe.waiting_to_read.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.probe
            .waiting_to_read
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.note_write(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.note_write(result)
    }
}

/// The router as hyper calls it, once per request.
struct Service {
    router: Router,
    guard: Guard,
    peer: Peer,
    probe: Arc<Probe>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Reply>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Reply>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.probe.busy.fetch_add(1, Ordering::Relaxed);
        let busy = Busy(self.probe.clone());
        let probe = self.probe.clone();
        // An event stream's body can be written by us (see `write_event_stream`)
        // only where hyper would write it as HTTP/1.1 chunks after a GET.
        let may_hand_off = request.method() == Method::GET
            && request.version() == Version::HTTP_11
            && request.body().is_end_stream();
        let keep_alive = !connection_close(request.headers());
        let mut request = request.map(|body| {
            let done = body.is_end_stream();
            Body::new(RequestBody {
                body,
                done,
                probe: probe.clone(),
            })
        });
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let refused = super::host_refusal(&self.guard, &request);
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = match refused {
                Some(response) => response,
                None => {
                    poll_fn(|cx| {
                        tower_service::Service::<Request<Body>>::poll_ready(&mut router, cx)
                    })
                    .await?;
                    tower_service::Service::call(&mut router, request).await?
                }
            };
            if may_hand_off && is_event_stream(&response) {
                let keep_alive = keep_alive && !connection_close(response.headers());
                let (parts, body) = response.into_parts();
                *probe.lock_handoff() = Some(Handoff {
                    body: Tracked { body, _busy: busy },
                    keep_alive,
                });
                return Ok(Response::from_parts(parts, Reply::HandedOff(probe)));
            }
            Ok(response.map(|body| Reply::Body(Tracked { body, _busy: busy })))
        })
    }
}

/// Whether `Connection` asks to close after this message.
fn connection_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// A 200 `text/event-stream` response of unknown length (what `Sse` answers).
fn is_event_stream(response: &Response<Body>) -> bool {
    response.status() == StatusCode::OK
        && !response.headers().contains_key(header::CONTENT_LENGTH)
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// What hyper writes as a response body: the handler's, or nothing of an
/// event stream's, whose body the connection writes itself once hyper has
/// written the head.
enum Reply {
    Body(Tracked),
    HandedOff(Arc<Probe>),
}

impl HttpBody for Reply {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match self.get_mut() {
            Reply::Body(body) => Pin::new(body).poll_frame(cx),
            Reply::HandedOff(probe) => {
                // The head is written: the connection takes over as soon as
                // hyper has flushed it and returns.
                probe.handoff_asked.store(true, Ordering::Relaxed);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Body(body) => body.is_end_stream(),
            Reply::HandedOff(_) => false,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Reply::Body(body) => body.size_hint(),
            Reply::HandedOff(_) => http_body::SizeHint::default(),
        }
    }
}

/// Counts a request as in flight until its response body is dropped.
struct Busy(Arc<Probe>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted while hyper writes it.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that notes, when dropped, whether it was read to its end.
struct RequestBody {
    body: Incoming,
    done: bool,
    probe: Arc<Probe>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !self.done && !self.body.is_end_stream() {
            self.probe.unfinished_body.store(true, Ordering::Relaxed);
        }
    }
}

//! One MQTT connection, from CONNECT to close: reads packets, writes what
//! clients publish through the store (acknowledging only once it is durable),
//! and delivers changes from the bus with the QoS flows, windows and limits
//! the client and the config allow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use app::event::{ChangeEvent, ChangeType, MqttMeta, Origin};
use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::broker::{Broker, Previous, Takeover};
use super::codec::{
    Ack, ConnAck, Connect, DecodeError, Disconnect, Packet, ProtocolVersion, Publish, QoS,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, Will, decode, encode, encoded_len,
};
use super::properties::{
    AckProperties, ConnAckProperties, DisconnectProperties, PayloadFormat, PublishProperties,
};
use super::reason::ReasonCode;
use super::session::{Delivery, Filling, Incoming, OutState, Outgoing, Session, Subscription};
use super::shares::SharedMessage;
use super::topics::{self, Target};
use crate::access::Action;
use crate::auth::{Principal, Refusal, Refused, RefusedAction};
use crate::bus::RecvError;
use crate::feed::{Feed, Start};
use crate::metrics::Protocol;
use crate::store::{ClientOwner, StoreError, WriteOp};
use crate::topic::TopicFilter;

mod inbound;
mod outbound;
mod subscriptions;
mod will;

pub(super) use will::send_orphaned_will;

use inbound::{InboundWrite, check_levels, check_topic};
use outbound::{TopicAliases, pull};

/// How long a stuck client may block a write before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a connection being taken over to hand its session on.
pub(super) const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest client id accepted.
const MAX_CLIENT_ID_LEN: usize = 256;
/// The window towards an MQTT 5 client is its Receive Maximum, capped here.
const MAX_WINDOW: usize = 1024;
/// Live changes taken from the feed at once when they are already waiting.
const PULL_BATCH: usize = 256;
/// How long a socket past `max_connections` may take to send the CONNECT
/// that is answered "server busy".
const BUSY_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a refused client's input is read and dropped before its socket
/// closes, and how much of it at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;
/// Bytes encoded for the client and not yet written, past which no more
/// deliveries are encoded until they are (one message may go over it).
const MAX_UNWRITTEN: usize = 1 << 20;

/// Bytes a quiet connection keeps ready to read into: an idle connection's
/// buffers are most of what it costs (10,000 idle devices are the norm).
const READ_CHUNK: usize = 1024;
/// Bytes read at once from a client that keeps the socket full.
const BUSY_READ_CHUNK: usize = 16 * 1024;
/// Input or output buffer capacity kept after a burst.
const KEPT_BUFFER: usize = 16 * 1024;

/// Why a connection ends.
enum End {
    /// The client sent DISCONNECT; `will` says whether it asked for its will (0x04).
    Disconnected {
        will: bool,
    },
    /// The socket closed or failed without DISCONNECT.
    Closed,
    /// A newer connection with the same client id asked for the session.
    TakenOver(Takeover),
    /// We close it, telling an MQTT 5 client why.
    Refused(ReasonCode, String),
    ShuttingDown,
}

pub(super) async fn run<S>(broker: Broker, stream: S, peer: SocketAddr, ambient: Option<Principal>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Counted from accept, so sockets that never send CONNECT count too.
    // Past the limit a few may wait, briefly, to be told the server is busy.
    let (_slot, busy) = match broker.admit_connection() {
        Ok(slot) => (slot, false),
        Err(Some(slot)) => (slot, true),
        Err(None) => return,
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let limits = broker.limits().clone();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let wait = if busy {
        limits.connect_timeout.min(BUSY_CONNECT_TIMEOUT)
    } else {
        limits.connect_timeout
    };
    let connect = match timeout(
        wait,
        read_connect(&mut reader, &mut writer, &mut input, limits.max_packet_size),
    )
    .await
    {
        Ok(Some(connect)) => connect,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    if busy {
        Box::pin(refuse_connect(
            &mut writer,
            connect.protocol,
            ReasonCode::ServerBusy,
        ))
        .await;
        return;
    }
    let metrics = broker.store().metrics().clone();
    let _metric = metrics.connection(Protocol::Mqtt);
    // The steps before and after `serve` are boxed: an idle connection's task
    // is the size of its largest step, and it spends its life in `serve`.
    let Some(mut connection) =
        Box::pin(Connection::open(broker, writer, connect, peer, ambient)).await
    else {
        return;
    };
    let end = connection.serve(&mut reader, &mut input).await;
    let refused = matches!(end, End::Refused(..));
    Box::pin(connection.close(end)).await;
    if refused {
        // Its 4 KiB scratch buffer would otherwise be in every connection's task.
        Box::pin(linger(&mut reader)).await;
    }
}

/// Room for the next read. Most connections are quiet and their packets
/// small, so they hold one small chunk; a read that filled all the room there
/// was means a busy stream, which gets a larger one (never more than a packet's
/// worth); once drained, a buffer past [`KEPT_BUFFER`] is given back.
fn make_room(input: &mut BytesMut, max_packet: usize) {
    if input.is_empty() && input.capacity() > KEPT_BUFFER {
        *input = BytesMut::new();
    }
    let spare = input.capacity() - input.len();
    if spare == 0 {
        input.reserve(BUSY_READ_CHUNK.min(max_packet));
    } else if spare < READ_CHUNK / 4 {
        input.reserve(READ_CHUNK);
    }
}

/// After refusing a client: reads, and drops, what it still sends, for a
/// moment. A socket closed with unread input is reset, and the reset can
/// destroy our DISCONNECT before the client reads it (a client that sent too
/// many QoS 2 publishes is still answering their PUBRECs when told 0x93).
async fn linger<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = timeout(LINGER, async {
        while left > 0 {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Reads up to the CONNECT packet; answers a refused CONNECT before closing.
async fn read_connect<S: AsyncRead + AsyncWrite>(
    reader: &mut ReadHalf<S>,
    writer: &mut WriteHalf<S>,
    input: &mut BytesMut,
    max_packet_size: usize,
) -> Option<Connect> {
    loop {
        match decode(input, None, max_packet_size) {
            Ok(Some(Packet::Connect(connect))) => return Some(connect),
            Ok(Some(_)) => return None,
            Ok(None) => {}
            Err(e) => {
                tracing::debug!("bad CONNECT: {e}");
                let version = e
                    .connack_version()
                    .or_else(|| super::codec::connect_protocol_version(input));
                if let Some(version) = version {
                    refuse_connect(writer, version, e.reason_code()).await;
                }
                return None;
            }
        }
        input.reserve(READ_CHUNK);
        match reader.read_buf(input).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The CONNACK code for a client the guard did not let in (SECURITY.md §7.6).
fn refusal_code(refusal: &Refusal, version: ProtocolVersion) -> ReasonCode {
    match refusal {
        Refusal::BadCredentials => ReasonCode::BadUserNameOrPassword,
        Refusal::NotAuthorized | Refusal::SetupRequired => ReasonCode::NotAuthorized,
        // 3.1.1 has no code for it; "not authorized" tells the client to stop.
        Refusal::Throttled(_) if version == ProtocolVersion::V311 => ReasonCode::NotAuthorized,
        Refusal::Throttled(_) => ReasonCode::ConnectionRateExceeded,
        Refusal::Internal(e) => {
            tracing::error!("cannot check MQTT credentials: {e}");
            ReasonCode::ServerUnavailable
        }
    }
}

async fn refuse_connect<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    reason_code: ReasonCode,
) {
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code,
        properties: ConnAckProperties::default(),
    });
    // 3.1.1 has no code for some refusals; it just closes [MQTT-3.2.2-6].
    if encode(&connack, version, &mut out).is_ok() {
        let _ = timeout(WRITE_TIMEOUT, writer.write_all(&out)).await;
    }
    let _ = writer.shutdown().await;
}

struct Connection<W> {
    broker: Broker,
    writer: W,
    out: BytesMut,
    version: ProtocolVersion,
    client_id: String,
    /// Who the client proved to be at CONNECT; every topic it touches is
    /// judged for this principal, and it is re-checked when access changes.
    principal: Principal,
    generation: u64,
    session: Box<Session>,
    will: Option<Will>,
    /// The store's revision of this connection's claim of the client id
    /// (0 embedded), which also keeps the will while it is connected.
    claimed: u64,
    takeovers: mpsc::Receiver<Takeover>,
    /// Silence allowed before the keep-alive deadline (1.5 × keep-alive).
    keep_alive: Option<Duration>,
    /// QoS 1/2 messages we may have in flight to the client.
    window: usize,
    /// The largest packet the client accepts.
    client_max_packet: usize,
    /// Topic aliases the client set towards us.
    aliases: HashMap<u16, String>,
    /// Topic aliases we give the client.
    topic_aliases: TopicAliases,
    writes: FuturesOrdered<InboundWrite>,
    /// Of `writes`, those still in the store's writer queue. While there are
    /// any, a transient publish joins that queue too instead of going straight
    /// to the bus, so it cannot overtake them (MQTT 5 §4.6).
    queued: usize,
    /// Client QoS 1/2 publishes not yet fully acknowledged.
    receiving: usize,
    /// The session was resumed: what it had in flight goes again first.
    resend: bool,
    /// Of a resumed session's messages in flight, how many (those marked
    /// `unsent`) wait to be sent again until the client's window has room.
    resend_left: usize,
}

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    /// Checks CONNECT, claims the client id (taking over a live connection or
    /// a stored session) and answers with CONNACK.
    async fn open(
        broker: Broker,
        mut writer: W,
        connect: Connect,
        peer: SocketAddr,
        ambient: Option<Principal>,
    ) -> Option<Self> {
        let version = connect.protocol;
        let limits = broker.limits().clone();
        // The cheap checks first: a password check costs an argon2 hash.
        let checked = (|| {
            if connect.properties.authentication_method.is_some() {
                return Err(ReasonCode::BadAuthenticationMethod);
            }
            if connect.client_id.len() > MAX_CLIENT_ID_LEN
                || (connect.client_id.is_empty()
                    && version == ProtocolVersion::V311
                    && !connect.clean_start)
            {
                return Err(ReasonCode::ClientIdentifierNotValid);
            }
            if let Some(will) = &connect.will {
                check_topic(&will.topic, &limits)?;
            }
            Ok(())
        })();
        let proved = match checked {
            Ok(()) => broker
                .guard()
                .mqtt_principal(
                    connect.username.as_deref(),
                    connect.password.as_deref(),
                    &connect.client_id,
                    peer,
                    ambient,
                )
                .await
                .map_err(|refusal| refusal_code(&refusal, version)),
            Err(code) => Err(code),
        };
        let will_allowed = |p: &Principal| {
            connect
                .will
                .as_ref()
                .is_none_or(|w| broker.guard().allows(p, Action::Publish, &w.topic))
        };
        let mut principal = match proved {
            Ok(p) if will_allowed(&p) => p,
            Ok(p) => {
                broker.guard().refused(Refused {
                    username: p.username.clone(),
                    client_id: connect.client_id.clone(),
                    peer: Some(peer),
                    what: RefusedAction::Connect {
                        will_topic: connect.will.as_ref().map(|w| w.topic.clone()),
                    },
                });
                tracing::debug!(%peer, client_id = %connect.client_id, "CONNECT refused: the will's topic is not allowed");
                refuse_connect(&mut writer, version, ReasonCode::NotAuthorized).await;
                return None;
            }
            Err(code) => {
                broker.guard().refused(Refused {
                    username: connect.username.clone(),
                    client_id: connect.client_id.clone(),
                    peer: Some(peer),
                    what: RefusedAction::Connect {
                        will_topic: connect.will.as_ref().map(|w| w.topic.clone()),
                    },
                });
                tracing::debug!(%peer, client_id = %connect.client_id, ?code, "CONNECT refused");
                refuse_connect(&mut writer, version, code).await;
                return None;
            }
        };

        let generation = broker.next_generation();
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned {
            // Random too: the client id is claimed across nodes now, and
            // nodes in containers share pid 1 and count generations alike.
            let mut random = [0u8; 6];
            let salt = getrandom::fill(&mut random)
                .map(|()| random.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
                .unwrap_or(0);
            format!("marquee-{generation:x}-{:x}-{salt:x}", std::process::id())
        } else {
            connect.client_id.clone()
        };
        principal.client_id = client_id.clone();
        // No session waits for ever: 3.1.1 persistent sessions get the
        // configured expiry, and MQTT 5 clients at most that.
        let max_expiry = limits.max_session_expiry_secs();
        let asked = match version {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V311 => max_expiry,
        };
        let expiry = asked.min(max_expiry);
        // Across nodes first: the node that had the client closes its
        // connection once it sees this claim. Before CONNACK, so the client
        // is never connected twice once it has been answered.
        let since_ms = super::session::now_ms();
        let kept_will = connect.will.as_ref().and_then(|w| will::kept(w, expiry));
        let claim = broker
            .store()
            .claim_client(&client_id, kept_will.as_deref());
        let (store_claim, owner) = match claim.await {
            Ok(claim) => claim,
            Err(e) => {
                tracing::warn!(%peer, %client_id, "CONNECT refused: cannot claim the client id: {e}");
                refuse_connect(&mut writer, version, ReasonCode::ServerUnavailable).await;
                return None;
            }
        };
        let (takeover_tx, takeovers) = mpsc::channel(1);
        let claimed = broker.claim(&client_id, generation, takeover_tx, expiry > 0, store_claim);
        let Ok(previous) = claimed else {
            tracing::debug!(%peer, %client_id, "CONNECT refused: max_sessions reached");
            if kept_will.is_some()
                && let Err(e) = broker.store().settle_will(&client_id, store_claim).await
            {
                tracing::warn!(%client_id, "cannot take a refused client's will off its claim: {e}");
            }
            refuse_connect(&mut writer, version, ReasonCode::QuotaExceeded).await;
            return None;
        };
        let on_etcd = broker.store().on_etcd();
        let previous = match previous {
            // The client was on another node: its session is the one that
            // node saves on seeing this claim (any copy here is older).
            Previous::None | Previous::Offline(_)
                if owner == ClientOwner::OtherNode && !connect.clean_start =>
            {
                if let Previous::Offline(mut stale) = previous {
                    broker.leave_shares(&client_id, &mut stale);
                }
                let saved = broker.saved_session(&client_id, Some(since_ms)).await;
                saved.and_then(|saved| broker.resume_saved(&client_id, saved))
            }
            // On etcd, sessions are read as their clients connect: saved by
            // a node that has gone since, or by this one before a restart.
            Previous::None if on_etcd && !connect.clean_start => {
                let saved = broker.saved_session(&client_id, None).await;
                saved.and_then(|saved| broker.resume_saved(&client_id, saved))
            }
            Previous::None => None,
            Previous::Offline(session) => Some(session),
            Previous::Online(old) => {
                let (reply, handed) = tokio::sync::oneshot::channel();
                if old.send(reply).await.is_ok() {
                    timeout(TAKEOVER_TIMEOUT, handed)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                } else {
                    None
                }
            }
        };
        let (mut session, session_present) = match previous {
            Some(session) if !connect.clean_start => (session, true),
            Some(mut old) => {
                broker.leave_shares(&client_id, &mut old);
                if old.stored
                    && let Err(e) = broker.store().save_session(&client_id, None).await
                {
                    tracing::warn!(%client_id, "cannot forget the old session: {e}");
                }
                (Box::new(Session::new(expiry)), false)
            }
            None => (Box::new(Session::new(expiry)), false),
        };
        // A clean start ends the session wherever it was saved. When the
        // client was on another node, that node saves it on seeing this
        // claim: wait for that save, so that forgetting it comes after.
        if connect.clean_start && on_etcd && !session.stored {
            let wait_since = (owner == ClientOwner::OtherNode).then_some(since_ms);
            if broker.saved_session(&client_id, wait_since).await.is_some()
                && let Err(e) = broker.store().save_session(&client_id, None).await
            {
                tracing::warn!(%client_id, "cannot forget the old session: {e}");
            }
        }
        session.expiry = expiry;
        session.shared.set_online(true);

        let (keep_alive, server_keep_alive) = match version {
            ProtocolVersion::V5
                if connect.keep_alive == 0 || connect.keep_alive > limits.max_keep_alive =>
            {
                (limits.max_keep_alive, Some(limits.max_keep_alive))
            }
            _ => (connect.keep_alive, None),
        };
        let window = match version {
            ProtocolVersion::V5 => connect
                .properties
                .receive_maximum
                .map_or(MAX_WINDOW, |m| usize::from(m.get()).min(MAX_WINDOW)),
            ProtocolVersion::V311 => usize::from(limits.max_inflight),
        };
        let client_max_packet = connect
            .properties
            .maximum_packet_size
            .map_or(super::broker::MAX_PACKET_SIZE, |m| {
                usize::try_from(m.get()).unwrap_or(usize::MAX)
            });

        let mut connection = Self {
            broker,
            writer,
            // Grows as deliveries need it; see `flush` for how it shrinks.
            out: BytesMut::new(),
            version,
            client_id,
            principal,
            generation,
            session,
            will: connect.will,
            claimed: store_claim,
            takeovers,
            keep_alive: (keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            window,
            client_max_packet,
            aliases: HashMap::new(),
            topic_aliases: TopicAliases::new(
                match version {
                    ProtocolVersion::V5 => connect.properties.topic_alias_maximum.unwrap_or(0),
                    ProtocolVersion::V311 => 0,
                },
                limits.topic_alias_maximum,
            ),
            writes: FuturesOrdered::new(),
            queued: 0,
            receiving: 0,
            resend: false,
            resend_left: 0,
        };
        let properties = ConnAckProperties {
            receive_maximum: NonZeroU16::new(limits.max_inflight),
            maximum_packet_size: u32::try_from(limits.max_packet_size)
                .ok()
                .and_then(NonZeroU32::new),
            topic_alias_maximum: Some(limits.topic_alias_maximum),
            assigned_client_identifier: assigned.then(|| connection.client_id.clone()),
            server_keep_alive,
            // Told only when it is not what the client asked for.
            session_expiry_interval: (version == ProtocolVersion::V5 && expiry != asked)
                .then_some(expiry),
            retain_available: Some(true),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(true),
            shared_subscription_available: Some(true),
            ..ConnAckProperties::default()
        };
        connection.send(&Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties,
        }));
        connection.resend = session_present;
        tracing::debug!(%peer, client_id = %connection.client_id, ?version, session_present, "MQTT client connected");
        Some(connection)
    }

    /// The connection's life: packets in, deliveries out, until it ends.
    async fn serve<R: AsyncRead + Unpin>(&mut self, reader: &mut R, input: &mut BytesMut) -> End {
        let mut shutdown = self.broker.shutdown_signal();
        let mut access = self.broker.guard().changes();
        let max_packet = self.broker.limits().max_packet_size;
        let store = self.broker.store().clone();
        let mut last_heard = Instant::now();
        if self.resend {
            self.resend_inflight();
        }
        if self.session.lagged
            && let Err(end) = Box::pin(self.rebuild_feed()).await
        {
            return end;
        }
        // Whether the packets buffered came in a read not yet handled.
        let mut fresh = true;
        loop {
            // Handle every whole packet buffered, including any that came
            // in the same read as CONNECT.
            while self.can_read() {
                match decode(input, Some(self.version), max_packet) {
                    Ok(Some(packet)) => {
                        store.metrics().message_in(Protocol::Mqtt);
                        if fresh && matches!(packet, Packet::Publish(_)) {
                            fresh = false;
                            // Connections woken by the same poll as this one
                            // go first: the scheduler runs the task woken
                            // last first, which would let this publish
                            // overtake a SUBSCRIBE that reached us before it
                            // on another connection. Once per read.
                            tokio::task::yield_now().await;
                        }
                        // Boxed: its state is only needed while a packet is handled.
                        if let Err(end) = Box::pin(self.handle(packet)).await {
                            return end;
                        }
                        // A full read buffer is hundreds of packets: let the
                        // subscribers' tasks run in between, or a fast
                        // publisher fills their queues before they get a turn.
                        tokio::task::consume_budget().await;
                    }
                    Ok(None) => break,
                    Err(e) => return refused_for(&e),
                }
            }
            // Deliver what the window allows, a buffer's worth at a time.
            loop {
                let more = self.drain_pending();
                if let Err(end) = self.flush().await {
                    return end;
                }
                if !more {
                    break;
                }
            }
            // Take more from the stream only when the client can take it.
            let pulling =
                self.session.inflight.len() < self.window && self.session.pending.is_empty();
            let deadline = self.keep_alive.map(|k| last_heard + k);
            let reading = self.can_read();
            let session = &mut self.session;
            // Every future raced here must be cancel-safe: the loser of each
            // round is dropped and made anew next time, so it may not have
            // consumed anything it would then lose. `stopped` and the sleep
            // hold nothing; `recv` on an mpsc, `read_buf` and
            // `FuturesOrdered::next` and `watch::Receiver::changed` are
            // cancel-safe by their docs; `pull`
            // awaits only `Feed::next` or the shared-subscription inbox (both
            // an mpsc `recv`) or `Backfill::next_page`, which keeps an
            // unfinished page read for the next call instead of restarting
            // the scan.
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return End::ShuttingDown,
                Some(reply) = self.takeovers.recv() => return End::TakenOver(reply),
                Ok(()) = access.changed() => {
                    if !self.broker.guard().still_valid(&self.principal) {
                        tracing::info!(client_id = %self.client_id, user = self.principal.name(), "MQTT client disconnected: its access changed");
                        return End::Refused(ReasonCode::AdministrativeAction, "access changed".into());
                    }
                }
                Some(done) = self.writes.next(), if !self.writes.is_empty() => {
                    self.acknowledge(done);
                }
                read = reader.read_buf(input), if reading => {
                    match read {
                        Ok(0) | Err(_) => return End::Closed,
                        Ok(_) => {}
                    }
                    last_heard = Instant::now();
                    fresh = true;
                    make_room(input, max_packet);
                }
                pulled = pull(session, &store), if pulling => {
                    if let Err(end) = pulled {
                        return end;
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    return End::Refused(ReasonCode::KeepAliveTimeout, "keep-alive timeout".into());
                }
            }
        }
    }

    /// Whether to take more packets from the client. Publishes waiting for
    /// the store push back by not reading: always past `max_inflight` writes,
    /// and for MQTT 3.1.1 (which has no Receive Maximum to enforce) past
    /// `max_inflight` unacknowledged QoS 1/2 publishes.
    fn can_read(&self) -> bool {
        let max = usize::from(self.broker.limits().max_inflight);
        self.writes.len() < max && (self.version == ProtocolVersion::V5 || self.receiving < max)
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::PubAck(ack) => self.step_done(ack.packet_id.get(), OutState::Acked, "PUBACK"),
            Packet::PubRec(ack) => {
                let id = ack.packet_id.get();
                match self.outgoing_state(id) {
                    Some(OutState::Received) if !ack.reason_code.is_error() => {
                        if let Some(outgoing) =
                            self.session.inflight.iter_mut().find(|o| o.packet_id == id)
                        {
                            outgoing.state = OutState::Released;
                            // Received before the reconnect: no need to send it again.
                            if std::mem::take(&mut outgoing.unsent) {
                                self.resend_left = self.resend_left.saturating_sub(1);
                            }
                        }
                        self.send(&Packet::PubRel(Ack::new(ack.packet_id)));
                        Ok(())
                    }
                    // A refusal ends the QoS 2 flow at PUBREC (§4.3.3).
                    Some(OutState::Received) => self.step_done(id, OutState::Received, "PUBREC"),
                    // A PUBREC again: our PUBREL may not have reached it.
                    Some(OutState::Released) => {
                        self.send(&Packet::PubRel(Ack::new(ack.packet_id)));
                        Ok(())
                    }
                    Some(OutState::Acked) => self.step_done(id, OutState::Received, "PUBREC"),
                    None => {
                        let mut rel = Ack::new(ack.packet_id);
                        rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                        self.send(&Packet::PubRel(rel));
                        Ok(())
                    }
                }
            }
            Packet::PubComp(ack) => {
                self.step_done(ack.packet_id.get(), OutState::Released, "PUBCOMP")
            }
            Packet::PubRel(ack) => {
                let mut comp = Ack::new(ack.packet_id);
                match self.session.incoming.get(&ack.packet_id.get()) {
                    Some(Incoming::Received) => {
                        self.session.incoming.remove(&ack.packet_id.get());
                        self.receiving = self.receiving.saturating_sub(1);
                    }
                    // The write is still on its way: the client broke the flow.
                    Some(Incoming::Writing) => {
                        return Err(End::Refused(
                            ReasonCode::ProtocolError,
                            "PUBREL before PUBREC".into(),
                        ));
                    }
                    None => comp.reason_code = ReasonCode::PacketIdentifierNotFound,
                }
                self.send(&Packet::PubComp(comp));
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => {
                self.on_unsubscribe(unsubscribe).await;
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(expiry) = disconnect.properties.session_expiry_interval {
                    // [MQTT-3.14.2-2]: no session may be asked for at DISCONNECT
                    // when CONNECT said it would end with the connection.
                    if self.session.expiry == 0 && expiry != 0 {
                        return Err(End::Refused(
                            ReasonCode::ProtocolError,
                            "session expiry set at DISCONNECT after 0 at CONNECT".into(),
                        ));
                    }
                    self.session.expiry =
                        expiry.min(self.broker.limits().max_session_expiry_secs());
                }
                Err(End::Disconnected {
                    will: disconnect.reason_code == ReasonCode::DisconnectWithWillMessage,
                })
            }
            // A CONNECT naming an Authentication Method was refused (0x8C), so
            // no connected client has one, and an AUTH without one is a
            // Protocol Error [MQTT-4.12.0-5]; re-authentication likewise
            // [MQTT-4.12.1-1].
            Packet::Auth(_) => Err(End::Refused(
                ReasonCode::ProtocolError,
                "AUTH without an Authentication Method in CONNECT".into(),
            )),
            // The decoder refuses every packet a client cannot send.
            other => Err(End::Refused(
                ReasonCode::ProtocolError,
                format!("unexpected {:?}", other.packet_type()),
            )),
        }
    }

    /// Where our message `id` is in its flow, if it is in flight.
    fn outgoing_state(&self, id: u16) -> Option<OutState> {
        self.session
            .inflight
            .iter()
            .find(|o| o.packet_id == id)
            .map(|o| o.state)
    }

    /// The client's `what` ends the step `expected` of our message `id`.
    /// An acknowledgement of the wrong flow — a PUBREC for a QoS 1 message,
    /// a PUBACK for QoS 2, a PUBCOMP before PUBREL — is a protocol error
    /// (MQTT 5 §4.3, §4.13.1). One for an id not in flight is let go: it is
    /// a late duplicate of one already counted.
    fn step_done(&mut self, id: u16, expected: OutState, what: &str) -> Result<(), End> {
        match self.outgoing_state(id) {
            Some(state) if state == expected => {
                self.finish_outgoing(id, expected);
                Ok(())
            }
            Some(state) => Err(End::Refused(
                ReasonCode::ProtocolError,
                format!(
                    "{what} for packet {id}, which is waiting for {}",
                    state.awaits()
                ),
            )),
            None => Ok(()),
        }
    }

    fn allows(&self, action: Action, topic: &str) -> bool {
        self.broker.guard().allows(&self.principal, action, topic)
    }

    /// Tells the guard's watchers that this client was refused `what`.
    fn report_refusal(&self, what: RefusedAction) {
        self.broker.guard().refused(Refused {
            username: self.principal.username.clone(),
            client_id: self.client_id.clone(),
            peer: None,
            what,
        });
    }

    fn send(&mut self, packet: &Packet) {
        let too_large =
            |p: &Packet| encoded_len(p, self.version).is_ok_and(|len| len > self.client_max_packet);
        // Deliveries were sized as they were made; a client that set no
        // Maximum Packet Size takes anything MQTT can encode.
        let sized = matches!(packet, Packet::Publish(_))
            || self.client_max_packet >= super::broker::MAX_PACKET_SIZE;
        if self.version == ProtocolVersion::V5 && !sized && too_large(packet) {
            // Reason strings and user properties go first where the client's
            // Maximum Packet Size has no room for them [MQTT-3.1.2-24..25]
            // ([MQTT-3.2.2-19..20], [MQTT-3.4.2-2..3] and their kin).
            let mut plain = packet.clone();
            strip_diagnostics(&mut plain);
            if too_large(&plain) {
                tracing::debug!(client_id = %self.client_id, "{:?} larger than the client's Maximum Packet Size not sent", packet.packet_type());
                return;
            }
            self.send_fitting(&plain);
            return;
        }
        self.send_fitting(packet);
    }

    fn send_fitting(&mut self, packet: &Packet) {
        if let Err(e) = encode(packet, self.version, &mut self.out) {
            tracing::warn!(client_id = %self.client_id, "cannot encode {:?}: {e}", packet.packet_type());
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = timeout(WRITE_TIMEOUT, self.writer.write_all(&self.out)).await;
        self.out.clear();
        // A burst's large buffer is not kept for a quiet connection.
        if self.out.capacity() > KEPT_BUFFER {
            self.out = BytesMut::new();
        }
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Closed),
        }
    }

    /// Says goodbye, publishes the will if the client did not leave cleanly,
    /// and keeps or ends the session.
    async fn close(mut self, end: End) {
        // The socket is gone: nothing can be said on it.
        let gone = matches!(end, End::Closed);
        let (reason, publish_will, takeover) = match end {
            End::Disconnected { will } => (None, will, None),
            End::Closed => (None, true, None),
            End::TakenOver(reply) => (
                Some((ReasonCode::SessionTakenOver, String::new())),
                true,
                Some(reply),
            ),
            End::Refused(code, why) => (Some((code, why)), true, None),
            End::ShuttingDown => (
                Some((ReasonCode::ServerShuttingDown, String::new())),
                true,
                None,
            ),
        };
        // Writes already handed to the store finish first, and their
        // acknowledgements (or refusals: a failed fsync is 0x80) go out before
        // any DISCONNECT, so the client learns what became durable.
        while let Some(done) = self.writes.next().await {
            self.acknowledge(done);
        }
        if gone {
            self.out.clear();
        }
        if let Some((code, why)) = reason {
            if !why.is_empty() {
                tracing::debug!(client_id = %self.client_id, ?code, "closing: {why}");
            }
            if self.version == ProtocolVersion::V5 {
                self.send(&Packet::Disconnect(Disconnect {
                    reason_code: code,
                    properties: DisconnectProperties {
                        reason_string: (!why.is_empty()).then_some(why),
                        ..DisconnectProperties::default()
                    },
                }));
            }
        }
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
        self.session
            .incoming
            .retain(|_, s| *s == Incoming::Received);

        self.end_will(publish_will).await;
        if takeover.is_none() {
            self.session.shared.set_online(false);
            if self.session.expiry == 0 {
                self.broker.leave_shares(&self.client_id, &mut self.session);
            }
            self.save_session().await;
        }
        let reply = match takeover {
            Some(reply) => reply,
            None => match self
                .broker
                .release(&self.client_id, self.generation, self.session)
            {
                Ok(()) => return,
                Err(session) => {
                    // A new connection claimed the client id while this one was
                    // closing; its request for the session is on its way.
                    self.session = session;
                    match timeout(TAKEOVER_TIMEOUT, self.takeovers.recv()).await {
                        Ok(Some(reply)) => reply,
                        _ => return,
                    }
                }
            },
        };
        let _ = reply.send(Some(self.session));
    }
}

/// Takes out what a packet says only to help people debug: its reason
/// string and user properties.
fn strip_diagnostics(packet: &mut Packet) {
    match packet {
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            ack.properties = AckProperties::default();
        }
        Packet::SubAck(ack) => ack.properties = AckProperties::default(),
        Packet::UnsubAck(ack) => ack.properties = AckProperties::default(),
        Packet::Disconnect(disconnect) => {
            disconnect.properties.reason_string = None;
            disconnect.properties.user_properties.clear();
        }
        Packet::ConnAck(connack) => {
            connack.properties.reason_string = None;
            connack.properties.user_properties.clear();
        }
        _ => {}
    }
}

async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn store_failure(error: StoreError) -> End {
    tracing::warn!("MQTT session cannot read the store: {error}");
    End::Refused(ReasonCode::UnspecifiedError, error.to_string())
}

fn refused_for(error: &DecodeError) -> End {
    End::Refused(error.reason_code(), error.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

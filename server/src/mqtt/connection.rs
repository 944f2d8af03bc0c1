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
use crate::access::{Action, Identity};
use crate::bus::RecvError;
use crate::feed::{Feed, Start};
use crate::metrics::Protocol;
use crate::store::{StoreError, WriteOp};
use crate::topic::TopicFilter;

/// How long a stuck client may block a write before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a connection being taken over to hand its session on.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest client id accepted.
const MAX_CLIENT_ID_LEN: usize = 256;
/// The window towards an MQTT 5 client is its Receive Maximum, capped here.
const MAX_WINDOW: usize = 1024;
/// Live changes taken from the feed at once when they are already waiting.
const PULL_BATCH: usize = 256;
/// How long a socket past `max_connections` may take to send the CONNECT
/// that is answered "server busy".
const BUSY_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes encoded for the client and not yet written, past which no more
/// deliveries are encoded until they are (one message may go over it).
const MAX_UNWRITTEN: usize = 1 << 20;

/// A client publish on its way to durability, acknowledged in arrival order.
type InboundWrite = Pin<Box<dyn Future<Output = Inbound> + Send>>;

struct Inbound {
    packet_id: Option<u16>,
    qos: QoS,
    reason: ReasonCode,
    /// It went through the store's writer queue (see `Connection::queued`).
    queued: bool,
}

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

pub(super) async fn run<S>(broker: Broker, stream: S, peer: SocketAddr)
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
    let mut input = BytesMut::with_capacity(4096);
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
        refuse_connect(&mut writer, connect.protocol, ReasonCode::ServerBusy).await;
        return;
    }
    let metrics = broker.store().metrics().clone();
    let _metric = metrics.connection(Protocol::Mqtt);
    let Some(mut connection) = Connection::open(broker, writer, connect, peer).await else {
        return;
    };
    let end = connection.serve(&mut reader, &mut input).await;
    connection.close(end).await;
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
        input.reserve(4096);
        match reader.read_buf(input).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
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
    username: Option<String>,
    generation: u64,
    session: Box<Session>,
    will: Option<Will>,
    takeovers: mpsc::Receiver<Takeover>,
    /// Silence allowed before the keep-alive deadline (1.5 × keep-alive).
    keep_alive: Option<Duration>,
    /// QoS 1/2 messages we may have in flight to the client.
    window: usize,
    /// The largest packet the client accepts.
    client_max_packet: usize,
    aliases: HashMap<u16, String>,
    writes: FuturesOrdered<InboundWrite>,
    /// Of `writes`, those still in the store's writer queue. While there are
    /// any, a transient publish joins that queue too instead of going straight
    /// to the bus, so it cannot overtake them (MQTT 5 §4.6).
    queued: usize,
    /// Client QoS 1/2 publishes not yet fully acknowledged.
    receiving: usize,
    /// The session was resumed: what it had in flight goes again first.
    resend: bool,
}

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    /// Checks CONNECT, claims the client id (taking over a live connection or
    /// a stored session) and answers with CONNACK.
    async fn open(
        broker: Broker,
        mut writer: W,
        connect: Connect,
        peer: SocketAddr,
    ) -> Option<Self> {
        let version = connect.protocol;
        let limits = broker.limits().clone();
        let refuse = |code: ReasonCode| (code, version);
        let checked = (|| {
            if connect.properties.authentication_method.is_some() {
                return Err(refuse(ReasonCode::BadAuthenticationMethod));
            }
            let who = Identity {
                username: connect.username.as_deref(),
                client_id: &connect.client_id,
            };
            if !broker.access().admits(&who) {
                return Err(refuse(ReasonCode::NotAuthorized));
            }
            if connect.client_id.len() > MAX_CLIENT_ID_LEN
                || (connect.client_id.is_empty()
                    && version == ProtocolVersion::V311
                    && !connect.clean_start)
            {
                return Err(refuse(ReasonCode::ClientIdentifierNotValid));
            }
            if let Some(will) = &connect.will {
                if let Err(code) = check_topic(&will.topic, &limits) {
                    return Err(refuse(code));
                }
                if !broker.access().allows(&who, Action::Publish, &will.topic) {
                    return Err(refuse(ReasonCode::NotAuthorized));
                }
            }
            Ok(())
        })();
        if let Err((code, version)) = checked {
            tracing::debug!(%peer, client_id = %connect.client_id, ?code, "CONNECT refused");
            refuse_connect(&mut writer, version, code).await;
            return None;
        }

        let generation = broker.next_generation();
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned {
            format!("marquee-{generation:x}-{:x}", std::process::id())
        } else {
            connect.client_id.clone()
        };
        // No session waits for ever: 3.1.1 persistent sessions get the
        // configured expiry, and MQTT 5 clients at most that.
        let max_expiry = limits.max_session_expiry_secs();
        let asked = match version {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V311 => max_expiry,
        };
        let expiry = asked.min(max_expiry);
        let (takeover_tx, takeovers) = mpsc::channel(1);
        let claimed = broker.claim(&client_id, generation, takeover_tx, expiry > 0);
        let Ok(previous) = claimed else {
            tracing::debug!(%peer, %client_id, "CONNECT refused: max_sessions reached");
            refuse_connect(&mut writer, version, ReasonCode::QuotaExceeded).await;
            return None;
        };
        let previous = match previous {
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
            out: BytesMut::with_capacity(4096),
            version,
            client_id,
            username: connect.username,
            generation,
            session,
            will: connect.will,
            takeovers,
            keep_alive: (keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            window,
            client_max_packet,
            aliases: HashMap::new(),
            writes: FuturesOrdered::new(),
            queued: 0,
            receiving: 0,
            resend: false,
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
        let max_packet = self.broker.limits().max_packet_size;
        let store = self.broker.store().clone();
        let mut last_heard = Instant::now();
        if self.resend
            && let Err(end) = self.resend_inflight().await
        {
            return end;
        }
        if self.session.lagged
            && let Err(end) = self.rebuild_feed().await
        {
            return end;
        }
        loop {
            // Handle every whole packet buffered, including any that came
            // in the same read as CONNECT.
            while self.can_read() {
                match decode(input, Some(self.version), max_packet) {
                    Ok(Some(packet)) => {
                        store.metrics().message_in(Protocol::Mqtt);
                        if let Err(end) = self.handle(packet).await {
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
            // `FuturesOrdered::next` are cancel-safe by their docs; `pull`
            // awaits only `Feed::next` or the shared-subscription inbox (both
            // an mpsc `recv`) or `Backfill::next_page`, which keeps an
            // unfinished page read for the next call instead of restarting
            // the scan.
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return End::ShuttingDown,
                Some(reply) = self.takeovers.recv() => return End::TakenOver(reply),
                Some(done) = self.writes.next(), if !self.writes.is_empty() => {
                    self.acknowledge(done);
                }
                read = reader.read_buf(input), if reading => {
                    match read {
                        Ok(0) | Err(_) => return End::Closed,
                        Ok(_) => {}
                    }
                    last_heard = Instant::now();
                    // Room for the next read, never more than one packet's worth.
                    if input.capacity() - input.len() < 1024 {
                        input.reserve(4096.min(max_packet));
                    }
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
            Packet::PubAck(ack) => {
                self.finish_outgoing(ack.packet_id.get(), OutState::Acked);
                Ok(())
            }
            Packet::PubRec(ack) => {
                let id = ack.packet_id.get();
                let known = self
                    .session
                    .inflight
                    .iter_mut()
                    .find(|o| o.packet_id == id && o.state == OutState::Received);
                match known {
                    Some(outgoing) if !ack.reason_code.is_error() => {
                        outgoing.state = OutState::Released;
                        self.send(&Packet::PubRel(Ack::new(ack.packet_id)));
                    }
                    Some(_) => self.finish_outgoing(id, OutState::Received),
                    None => {
                        let mut rel = Ack::new(ack.packet_id);
                        rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                        self.send(&Packet::PubRel(rel));
                    }
                }
                Ok(())
            }
            Packet::PubComp(ack) => {
                self.finish_outgoing(ack.packet_id.get(), OutState::Released);
                Ok(())
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
            Packet::Auth(_) => Err(End::Refused(
                ReasonCode::BadAuthenticationMethod,
                "enhanced authentication is not supported".into(),
            )),
            // The decoder refuses every packet a client cannot send.
            other => Err(End::Refused(
                ReasonCode::ProtocolError,
                format!("unexpected {:?}", other.packet_type()),
            )),
        }
    }

    async fn on_publish(&mut self, mut publish: Publish) -> Result<(), End> {
        // Topic aliases [MQTT-3.3.2-7..12].
        if let Some(alias) = publish.properties.topic_alias {
            if alias.get() > self.broker.limits().topic_alias_maximum {
                return Err(End::Refused(
                    ReasonCode::TopicAliasInvalid,
                    format!("topic alias {alias} is above the maximum"),
                ));
            }
            if publish.topic.is_empty() {
                match self.aliases.get(&alias.get()) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => {
                        return Err(End::Refused(
                            ReasonCode::ProtocolError,
                            format!("topic alias {alias} was never set"),
                        ));
                    }
                }
            } else {
                self.aliases.insert(alias.get(), publish.topic.clone());
            }
        }
        let packet_id = publish.packet_id.map(NonZeroU16::get);
        if let Some(id) = packet_id {
            if publish.qos == QoS::ExactlyOnce && self.session.incoming.contains_key(&id) {
                // A resent QoS 2 PUBLISH: never applied twice [MQTT-4.3.3-10].
                if self.session.incoming.get(&id) == Some(&Incoming::Received)
                    && let Some(pid) = publish.packet_id
                {
                    self.send(&Packet::PubRec(Ack::new(pid)));
                }
                return Ok(());
            }
            if self.version == ProtocolVersion::V5
                && self.receiving >= usize::from(self.broker.limits().max_inflight)
            {
                return Err(End::Refused(
                    ReasonCode::ReceiveMaximumExceeded,
                    "more QoS 1/2 publishes in flight than the Receive Maximum".into(),
                ));
            }
        }
        let qos = publish.qos;
        let reason = match check_topic(&publish.topic, self.broker.limits()) {
            Err(code) => Some(code),
            Ok(()) if publish.topic.starts_with("$SYS") => Some(ReasonCode::NotAuthorized),
            Ok(()) if !self.allows(Action::Publish, &publish.topic) => {
                Some(ReasonCode::NotAuthorized)
            }
            Ok(()) => None,
        };
        if let Some(reason) = reason {
            tracing::debug!(client_id = %self.client_id, topic = %publish.topic, ?reason, "publish refused");
            // MQTT 3.1.1 has no way to refuse: the message is dropped and acknowledged.
            self.push_ready(packet_id, qos, reason);
            return Ok(());
        }
        if let Some(id) = packet_id {
            self.receiving += 1;
            if qos == QoS::ExactlyOnce {
                self.session.incoming.insert(id, Incoming::Writing);
            }
        }
        let meta = Arc::new(meta_of(&publish, &self.client_id));
        let write = apply_publish(&self.broker, publish, meta, self.queued > 0).await;
        let queued = write.queued;
        self.queued += usize::from(queued);
        self.writes.push_back(Box::pin(async move {
            Inbound {
                packet_id,
                qos,
                reason: write.done.await,
                queued,
            }
        }));
        Ok(())
    }

    /// Queues an acknowledgement behind the writes before it.
    fn push_ready(&mut self, packet_id: Option<u16>, qos: QoS, reason: ReasonCode) {
        if let Some(id) = packet_id {
            self.receiving += 1;
            if qos == QoS::ExactlyOnce {
                self.session.incoming.insert(id, Incoming::Writing);
            }
        }
        self.writes.push_back(Box::pin(async move {
            Inbound {
                packet_id,
                qos,
                reason,
                queued: false,
            }
        }));
    }

    /// A client publish is durable (or refused): acknowledge it.
    fn acknowledge(&mut self, done: Inbound) {
        // Acknowledged in order, so every earlier queued item is on the bus too.
        self.queued -= usize::from(done.queued);
        let Some(id) = done.packet_id.and_then(NonZeroU16::new) else {
            return;
        };
        let mut ack = Ack::new(id);
        ack.reason_code = done.reason;
        match done.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.receiving = self.receiving.saturating_sub(1);
                self.send(&Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                if !done.reason.is_error() {
                    self.session.incoming.insert(id.get(), Incoming::Received);
                } else {
                    // A refused QoS 2 publish ends its flow at PUBREC [MQTT-4.3.3-?].
                    self.session.incoming.remove(&id.get());
                    self.receiving = self.receiving.saturating_sub(1);
                }
                self.send(&Packet::PubRec(ack));
            }
        }
    }

    async fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        let limits = self.broker.limits().clone();
        let mut codes = Vec::with_capacity(subscribe.subscriptions.len());
        let mut fillings = Vec::new();
        for request in subscribe.subscriptions {
            let (share, text) = match split_share(&request.filter) {
                Ok(parts) => parts,
                Err(()) => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            let filter = match TopicFilter::parse(text) {
                Ok(f) if check_levels(text, &limits).is_ok() => f,
                _ => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            if share.is_some() && request.options.no_local {
                return Err(End::Refused(
                    ReasonCode::ProtocolError,
                    "No Local on a shared subscription [MQTT-3.8.3-4]".into(),
                ));
            }
            let is_new = !self.session.subscriptions.contains_key(&request.filter);
            if is_new && self.session.subscriptions.len() >= limits.max_subscriptions {
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            if !self.allows(Action::Subscribe, text) {
                codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            let options = request.options;
            // Shared subscriptions get no retained messages [MQTT-4.8.2].
            let send_retained = share.is_none()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNewSubscription => is_new,
                    RetainHandling::DoNotSend => false,
                };
            if share.is_some() {
                // Its messages come from the group, never from the feed.
                self.broker.shares().join(
                    &request.filter,
                    &filter,
                    &self.client_id,
                    &self.session.shared,
                );
            }
            self.session.subscriptions.insert(
                request.filter.clone(),
                Subscription {
                    filter: filter.clone(),
                    share: share.map(str::to_owned),
                    qos: options.qos,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    id: subscribe.properties.subscription_identifier,
                },
            );
            if share.is_none() {
                fillings.push((filter, send_retained.then(|| request.filter.clone())));
            }
            codes.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
        }
        // A persistent session's subscriptions are durable before SUBACK.
        self.save_session().await;
        // SUBACK goes before the retained messages it brings [MQTT-3.8.4-4].
        self.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        }));
        for (filter, retained_for) in fillings {
            let start = match retained_for {
                Some(_) => Start::State,
                None => Start::Since(self.broker.store().last_seq()),
            };
            self.begin(&filter, start, retained_for).await?;
        }
        Ok(())
    }

    /// Routes `filter` to this session's feed, queueing its backfill.
    async fn begin(
        &mut self,
        filter: &TopicFilter,
        start: Start,
        retained_for: Option<String>,
    ) -> Result<(), End> {
        let store = self.broker.store().clone();
        let feed = self.session.feed.get_or_insert_with(|| Feed::new(store));
        for (bus_filter, carrier) in topics::bus_filters(filter) {
            let backfill = match feed.begin(bus_filter.clone(), start).await {
                Ok(backfill) => backfill,
                Err(StoreError::ResumeGap { .. }) => feed
                    .begin(bus_filter, Start::State)
                    .await
                    .map_err(store_failure)?,
                Err(e) => return Err(store_failure(e)),
            };
            self.session.backfills.push_back(Filling {
                backfill,
                carrier,
                retained_for: retained_for.clone(),
            });
        }
        Ok(())
    }

    /// Keeps a persistent session's state in the store (or forgets one that
    /// ends with its connection).
    fn save_session(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let state = (self.session.expiry > 0)
            .then(|| serde_json::to_vec(&self.session.saved()).ok())
            .flatten();
        // Sessions that never were persistent cost no write.
        let needed = state.is_some() || self.session.stored;
        self.session.stored = state.is_some();
        let store = self.broker.store().clone();
        let client_id = self.client_id.clone();
        async move {
            if !needed {
                return;
            }
            if let Err(e) = store.save_session(&client_id, state).await {
                tracing::warn!(%client_id, "cannot save the session: {e}");
            }
        }
    }

    async fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            match self.session.subscriptions.remove(filter) {
                Some(subscription) if subscription.share.is_some() => {
                    // What the client has in hand it keeps; the rest goes back.
                    let returned = self.session.take_shared(Some(filter), false);
                    self.broker
                        .shares()
                        .leave(filter, &self.client_id, returned);
                    codes.push(ReasonCode::Success);
                }
                Some(subscription) => {
                    if let Some(feed) = &mut self.session.feed {
                        for (bus_filter, _) in topics::bus_filters(&subscription.filter) {
                            feed.remove(&bus_filter);
                        }
                    }
                    self.session
                        .pending
                        .retain(|d| d.retained_for.as_deref() != Some(filter.as_str()));
                    codes.push(ReasonCode::Success);
                }
                None => codes.push(ReasonCode::NoSubscriptionExisted),
            }
        }
        self.save_session().await;
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        }));
    }

    /// After a cut-off: a new feed that replays, from the change log, what the
    /// client has not seen (or the current state, if the log no longer reaches).
    async fn rebuild_feed(&mut self) -> Result<(), End> {
        let position = self.session.position();
        self.session.feed = None;
        self.session.backfills.clear();
        self.session.lagged = false;
        let filters: Vec<TopicFilter> = self
            .session
            .subscriptions
            .values()
            .filter(|s| s.share.is_none())
            .map(|s| s.filter.clone())
            .collect();
        for filter in filters {
            self.begin(&filter, Start::Since(position), None).await?;
        }
        Ok(())
    }

    /// Sends queued deliveries while the client's window has room.
    /// Returns whether it stopped for the unwritten-bytes cap with more to send.
    fn drain_pending(&mut self) -> bool {
        while self.session.inflight.len() < self.window {
            if self.out.len() >= MAX_UNWRITTEN {
                return !self.session.pending.is_empty();
            }
            let Some(delivery) = self.session.pending.pop_front() else {
                break;
            };
            self.deliver(&delivery);
        }
        false
    }

    fn deliver(&mut self, delivery: &Delivery) {
        let event = &delivery.event;
        let topic = topics::topic_of(event);
        if !self.allows(Action::Subscribe, &topic) {
            return;
        }
        let meta = event.mqtt.as_deref();
        if let Some(expires) = meta.and_then(|m| m.expires_at_ms)
            && expires <= now_ms()
        {
            return;
        }
        let published_qos = meta.map_or(QoS::ExactlyOnce, |m| {
            QoS::from_u8(m.qos).unwrap_or(QoS::AtMostOnce)
        });
        let mut qos = None;
        let mut retain = false;
        let mut ids = Vec::new();
        // A group's message goes through its shared subscription alone; a
        // live change through every other subscription it matches.
        let matching = self.session.subscriptions.iter().filter(|(text, s)| {
            match (&delivery.retained_for, &delivery.share) {
                (Some(only), _) => *text == only,
                (None, Some(share)) => text.as_str() == &**share,
                (None, None) => s.share.is_none() && s.filter.matches(&topic),
            }
        });
        for (_, subscription) in matching {
            if delivery.retained_for.is_none()
                && subscription.no_local
                && meta.is_some_and(|m| m.client_id == self.client_id)
            {
                continue;
            }
            let granted = subscription.qos.min(published_qos);
            qos = Some(qos.map_or(granted, |q: QoS| q.max(granted)));
            retain |= subscription.retain_as_published;
            if let Some(id) = subscription.id {
                ids.push(id);
            }
        }
        let Some(qos) = qos else { return };
        let stored = event.kind != ChangeType::Publish;
        let retain = match (&delivery.retained_for, self.version) {
            (Some(_), _) => true,
            (None, ProtocolVersion::V5) => retain && stored && meta.is_none_or(|m| m.retain),
            (None, ProtocolVersion::V311) => false,
        };
        let mut publish = Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into_owned(),
            packet_id: None,
            payload: topics::payload_of(event),
            properties: PublishProperties::default(),
        };
        if self.version == ProtocolVersion::V5 {
            publish.properties = properties_for(event, meta, ids);
        }
        if encoded_len(&Packet::Publish(publish.clone()), self.version)
            .is_ok_and(|len| len > self.client_max_packet)
        {
            // Too large for this client: discarded as if delivered [MQTT-3.1.2-25].
            return;
        }
        if qos != QoS::AtMostOnce {
            let id = self.session.allocate_packet_id();
            publish.packet_id = NonZeroU16::new(id);
            self.session.inflight.push_back(Outgoing {
                packet_id: id,
                seq: event.seq,
                publish: publish.clone(),
                state: if qos == QoS::AtLeastOnce {
                    OutState::Acked
                } else {
                    OutState::Received
                },
                shared: delivery.share.as_ref().map(|subscription| SharedMessage {
                    subscription: subscription.clone(),
                    event: event.clone(),
                }),
            });
        }
        self.broker.store().metrics().message_out(Protocol::Mqtt);
        self.send(&Packet::Publish(publish));
    }

    fn finish_outgoing(&mut self, id: u16, state: OutState) {
        if let Some(at) = self
            .session
            .inflight
            .iter()
            .position(|o| o.packet_id == id && o.state == state)
        {
            self.session.inflight.remove(at);
        }
    }

    /// On session resume: everything unacknowledged goes again, in order,
    /// PUBLISH with DUP set, PUBREL as it was [MQTT-4.4.0-1].
    async fn resend_inflight(&mut self) -> Result<(), End> {
        for at in 0..self.session.inflight.len() {
            let Some(outgoing) = self.session.inflight.get(at) else {
                break;
            };
            let packet = match outgoing.state {
                OutState::Acked | OutState::Received => {
                    let mut publish = outgoing.publish.clone();
                    publish.dup = true;
                    Packet::Publish(publish)
                }
                OutState::Released => match NonZeroU16::new(outgoing.packet_id) {
                    Some(id) => Packet::PubRel(Ack::new(id)),
                    None => continue,
                },
            };
            self.send(&packet);
            if self.out.len() >= MAX_UNWRITTEN {
                self.flush().await?;
            }
        }
        Ok(())
    }

    fn allows(&self, action: Action, topic: &str) -> bool {
        let who = Identity {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        };
        self.broker.access().allows(&who, action, topic)
    }

    fn send(&mut self, packet: &Packet) {
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
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Closed),
        }
    }

    /// Says goodbye, publishes the will if the client did not leave cleanly,
    /// and keeps or ends the session.
    async fn close(mut self, end: End) {
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

        // Let acknowledged-or-not writes finish: they are already queued.
        while self.writes.next().await.is_some() {}
        self.session
            .incoming
            .retain(|_, s| *s == Incoming::Received);

        if let Some(will) = self.will.take().filter(|_| publish_will) {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            let broker = self.broker.clone();
            let client_id = self.client_id.clone();
            let generation = self.generation;
            if delay == 0 || self.session.expiry == 0 {
                publish_will_message(&broker, will, &client_id).await;
            } else {
                let wait = Duration::from_secs(u64::from(delay.min(self.session.expiry)));
                let mut shutdown = broker.shutdown_signal();
                broker.tasks().clone().spawn(async move {
                    // A delayed will does not outlive the server: at shutdown
                    // it goes out at once rather than being lost.
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stopped(&mut shutdown) => {}
                    }
                    if broker.not_reconnected(&client_id, generation) {
                        publish_will_message(&broker, will, &client_id).await;
                    }
                });
            }
        }
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

/// Moves the next messages into `pending`: a page of the oldest backfill
/// while there is one (no live change may overtake it), else the next live change.
async fn pull(session: &mut Session, store: &crate::store::Store) -> Result<(), End> {
    // What a shared subscription's group chose this session for comes in
    // beside the feed (a group sends no retained state, so nothing to wait for).
    if let Ok(message) = session.shared.inbox.try_recv() {
        session.pending.push_back(shared_delivery(message));
        return Ok(());
    }
    let Some(filling) = session.backfills.front_mut() else {
        let next = {
            let live = async {
                match &mut session.feed {
                    Some(feed) => feed.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(message) = session.shared.inbox.recv() => Err(message),
                event = live => Ok(event),
            }
        };
        let event = match next {
            Ok(event) => event,
            Err(message) => {
                session.pending.push_back(shared_delivery(message));
                return Ok(());
            }
        };
        return match event {
            Ok(event) => {
                session.pending.push_back(Delivery {
                    event,
                    retained_for: None,
                    share: None,
                });
                // Take what else is ready at once, so a burst goes out in one write.
                if let Some(feed) = &mut session.feed {
                    while session.pending.len() < PULL_BATCH {
                        match feed.next().now_or_never() {
                            Some(Ok(event)) => session.pending.push_back(Delivery {
                                event,
                                retained_for: None,
                                share: None,
                            }),
                            Some(Err(RecvError::Lagged)) => {
                                session.lagged = true;
                                break;
                            }
                            _ => break,
                        }
                    }
                }
                Ok(())
            }
            Err(RecvError::Lagged) => {
                session.lagged = true;
                Err(End::Refused(
                    ReasonCode::QuotaExceeded,
                    "too slow: more changes queued for this client than allowed".into(),
                ))
            }
            Err(RecvError::Closed) => Err(End::ShuttingDown),
        };
    };
    match filling.backfill.next_page(store).await {
        Ok(Some(events)) => {
            for event in events {
                if topics::carried_by(&event, filling.carrier) {
                    session.pending.push_back(Delivery {
                        event: Arc::new(event),
                        retained_for: filling.retained_for.clone(),
                        share: None,
                    });
                }
            }
            Ok(())
        }
        Ok(None) => {
            if let Some(done) = session.backfills.pop_front()
                && let Some(feed) = &mut session.feed
            {
                feed.synced(done.backfill);
            }
            Ok(())
        }
        Err(e) => Err(store_failure(e)),
    }
}

fn shared_delivery(message: SharedMessage) -> Delivery {
    Delivery {
        event: message.event,
        retained_for: None,
        share: Some(message.subscription),
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

/// A client publish handed to the store.
struct Applied {
    /// Resolves when the message is durable (stored) or on the bus (transient).
    done: Pin<Box<dyn Future<Output = ReasonCode> + Send>>,
    /// Whether it went through the store's writer queue.
    queued: bool,
}

impl Applied {
    fn ready(reason: ReasonCode) -> Self {
        Self {
            done: Box::pin(std::future::ready(reason)),
            queued: false,
        }
    }
}

/// Writes a client publish through the store: retained is a durable put (or,
/// empty, a delete) of the topic's record; not retained is a message on the
/// bus — straight away, or `behind_writes` still queued at the store, through
/// the writer's queue after them. Returns once the message is queued.
async fn apply_publish(
    broker: &Broker,
    publish: Publish,
    meta: Arc<MqttMeta>,
    behind_writes: bool,
) -> Applied {
    let store = broker.store();
    let target = Target::of(store, &publish.topic);
    let (table, id) = target.key();
    if !publish.retain {
        let (table, id, value) = match target.value(&publish.payload) {
            Ok(value) => (table, id, value),
            // Not JSON on a record topic: still a message for MQTT subscribers.
            Err(_) => (
                crate::store::MQTT_TABLE,
                publish.topic.as_str(),
                topics::raw_value(&publish.payload),
            ),
        };
        if !behind_writes {
            return Applied::ready(
                match store.publish_with(table, id, value, Origin::Mqtt, Some(meta)) {
                    Ok(()) => ReasonCode::Success,
                    Err(e) => reason_for(&e),
                },
            );
        }
        return match store
            .publish_queued(table, id, value, Origin::Mqtt, Some(meta))
            .await
        {
            Ok(pending) => Applied {
                done: Box::pin(async move {
                    match pending.durable().await {
                        Ok(_) => ReasonCode::Success,
                        Err(e) => reason_for(&e),
                    }
                }),
                queued: true,
            },
            Err(e) => Applied::ready(reason_for(&e)),
        };
    }
    let op = if publish.payload.is_empty() {
        WriteOp::Delete {
            table: table.to_owned(),
            id: id.to_owned(),
            if_match: None,
        }
    } else {
        match target.value(&publish.payload) {
            Ok(value) => WriteOp::Put {
                table: table.to_owned(),
                id: Some(id.to_owned()),
                value,
                if_match: None,
            },
            Err(_) => return Applied::ready(ReasonCode::PayloadFormatInvalid),
        }
    };
    match store.enqueue(op, Origin::Mqtt, Some(meta)).await {
        Ok(pending) => Applied {
            done: Box::pin(async move {
                match pending.durable().await {
                    Ok(_) | Err(StoreError::NotFound(_)) => ReasonCode::Success,
                    Err(e) => reason_for(&e),
                }
            }),
            queued: true,
        },
        Err(e) => Applied::ready(reason_for(&e)),
    }
}

async fn publish_will_message(broker: &Broker, will: Will, client_id: &str) {
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic,
        packet_id: None,
        payload: will.payload,
        properties: PublishProperties {
            payload_format_indicator: will.properties.payload_format_indicator,
            message_expiry_interval: will.properties.message_expiry_interval,
            content_type: will.properties.content_type,
            response_topic: will.properties.response_topic,
            correlation_data: will.properties.correlation_data,
            user_properties: will.properties.user_properties,
            ..PublishProperties::default()
        },
    };
    let meta = Arc::new(meta_of(&publish, client_id));
    // The connection's own writes are done by now: nothing to queue behind.
    let reason = apply_publish(broker, publish, meta, false).await.done.await;
    if reason.is_error() {
        tracing::warn!(%client_id, ?reason, "will message not published");
    }
}

fn meta_of(publish: &Publish, client_id: &str) -> MqttMeta {
    let p = &publish.properties;
    MqttMeta {
        qos: publish.qos.as_u8(),
        client_id: client_id.to_owned(),
        retain: publish.retain,
        payload_utf8: p.payload_format_indicator == Some(PayloadFormat::Utf8),
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
        user_properties: p.user_properties.clone(),
        expires_at_ms: p
            .message_expiry_interval
            .map(|s| now_ms().saturating_add(u64::from(s) * 1000)),
    }
}

/// MQTT 5 properties of a delivery: what the publisher sent, the change's
/// metadata for stored changes, and the matching subscription identifiers.
fn properties_for(
    event: &ChangeEvent,
    meta: Option<&MqttMeta>,
    subscription_identifiers: Vec<NonZeroU32>,
) -> PublishProperties {
    let mut properties = PublishProperties {
        subscription_identifiers,
        ..PublishProperties::default()
    };
    if let Some(meta) = meta {
        properties.payload_format_indicator = meta.payload_utf8.then_some(PayloadFormat::Utf8);
        properties.content_type = meta.content_type.clone();
        properties.response_topic = meta.response_topic.clone();
        properties.correlation_data = meta.correlation_data.clone().map(Bytes::from);
        properties.user_properties = meta.user_properties.clone();
        properties.message_expiry_interval = meta.expires_at_ms.map(|at| {
            u32::try_from(at.saturating_sub(now_ms()).div_ceil(1000)).unwrap_or(u32::MAX)
        });
    }
    if let Some(seq) = event.seq {
        let user = &mut properties.user_properties;
        user.push(("seq".into(), seq.to_string()));
        user.push(("type".into(), event.kind.as_str().into()));
        if let Some(version) = event.version {
            user.push(("version".into(), version.to_string()));
        }
        user.push(("origin".into(), origin_name(event.origin).into()));
    }
    properties
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Rest => "rest",
        Origin::Ws => "ws",
        Origin::Mqtt => "mqtt",
        Origin::System => "system",
    }
}

/// Splits `$share/{group}/{filter}` into the group and the filter.
fn split_share(filter: &str) -> Result<(Option<&str>, &str), ()> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok((None, filter));
    };
    match rest.split_once('/') {
        Some((group, filter))
            if !group.is_empty() && !group.contains(['+', '#']) && !filter.is_empty() =>
        {
            Ok((Some(group), filter))
        }
        _ => Err(()),
    }
}

/// Topic names clients publish to: within the configured length and depth.
fn check_topic(topic: &str, limits: &super::Limits) -> Result<(), ReasonCode> {
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(ReasonCode::TopicNameInvalid);
    }
    check_levels(topic, limits).map_err(|_| ReasonCode::TopicNameInvalid)
}

fn check_levels(topic: &str, limits: &super::Limits) -> Result<(), ()> {
    if topic.len() > limits.max_topic_length || topic.split('/').count() > limits.max_topic_levels {
        return Err(());
    }
    Ok(())
}

fn reason_for(error: &StoreError) -> ReasonCode {
    match error {
        StoreError::Invalid(_) => ReasonCode::PayloadFormatInvalid,
        StoreError::BadName(_) | StoreError::NoSuchTable(_) => ReasonCode::TopicNameInvalid,
        StoreError::ShuttingDown => ReasonCode::ServerUnavailable,
        StoreError::VersionMismatch { .. } => ReasonCode::ImplementationSpecificError,
        _ => ReasonCode::UnspecifiedError,
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

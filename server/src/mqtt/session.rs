//! A client's session: what survives a reconnect when the client asks for it
//! (clean start 0 / a session expiry): its subscriptions, the messages in
//! flight in both directions, and its place in the change stream. While the
//! client is away its feed keeps queueing (bounded, like any subscriber); if
//! it overflows, the session resumes from the change log by `seq`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;

use app::event::ChangeEvent;
use serde::{Deserialize, Serialize};

use bytes::BytesMut;

use super::codec::{Packet, ProtocolVersion, Publish, QoS, decode_as_client, encode};
use super::shares::{Membership, SharedMessage};
use super::topics::Carrier;
use crate::feed::{Backfill, Feed};
use crate::topic::TopicFilter;

pub struct Session {
    pub subscriptions: BTreeMap<String, Subscription>,
    /// `None` until the first subscription.
    pub feed: Option<Feed>,
    /// The feed was cut off for falling behind: rebuild it from the change log.
    pub lagged: bool,
    /// Our PUBLISHes (and PUBRELs) the client has not finished acknowledging, oldest first.
    pub inflight: VecDeque<Outgoing>,
    /// The client's QoS 2 packet ids between PUBLISH and PUBREL.
    pub incoming: HashMap<u16, Incoming>,
    pub next_packet_id: u16,
    /// Messages taken from the feed, waiting for room in the client's window.
    pub pending: VecDeque<Delivery>,
    /// Backfills of new subscriptions, sent before any live change.
    pub backfills: VecDeque<Filling>,
    /// Seconds the session outlives its connection; 0 ends it with the connection.
    pub expiry: u32,
    /// Where a session read back after a restart resumes the change stream.
    pub resume_from: Option<u64>,
    /// Whether the store holds a saved copy (which must go when the session ends).
    pub stored: bool,
    /// Where its shared subscriptions' groups put the messages chosen for it.
    pub shared: Membership,
}

pub struct Subscription {
    pub filter: TopicFilter,
    /// For `$share/{group}/{filter}`: the group.
    pub share: Option<String>,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub id: Option<NonZeroU32>,
}

pub struct Outgoing {
    pub packet_id: u16,
    /// The change's `seq`, for stored changes.
    pub seq: Option<u64>,
    pub publish: Publish,
    pub state: OutState,
    /// Of a resumed session: not sent again yet (the client's window was full).
    pub unsent: bool,
    /// For a message from a shared subscription: what goes back to the
    /// group if the session ends before it is acknowledged.
    pub shared: Option<SharedMessage>,
}

/// Where an outgoing message is in its flow, named by the packet that ends the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1: sent, until PUBACK.
    Acked,
    /// QoS 2: sent, until PUBREC.
    Received,
    /// QoS 2: PUBREL sent, until PUBCOMP.
    Released,
}

impl OutState {
    /// The packet that ends this step, for telling a client what it got wrong.
    pub fn awaits(self) -> &'static str {
        match self {
            OutState::Acked => "PUBACK",
            OutState::Received => "PUBREC",
            OutState::Released => "PUBCOMP",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The write is being made durable; PUBREC follows.
    Writing,
    /// PUBREC sent; waiting for PUBREL.
    Received,
}

/// One change to send.
pub struct Delivery {
    pub event: Arc<ChangeEvent>,
    /// For a retained message sent because of a subscription: that
    /// subscription's filter. Live changes go to every matching subscription.
    pub retained_for: Option<String>,
    /// For a message a shared subscription's group chose this session for:
    /// that subscription (`$share/{group}/{filter}`), and only it.
    pub share: Option<Arc<str>>,
}

/// A backfill in progress.
pub struct Filling {
    pub backfill: Backfill,
    pub carrier: Carrier,
    /// The MQTT filter it serves; `Some` when it sends retained state.
    pub retained_for: Option<String>,
}

impl Session {
    /// The shared subscriptions this session holds: `$share/{group}/{filter}`
    /// and the filter.
    pub fn shares(&self) -> impl Iterator<Item = (&str, &TopicFilter)> {
        self.subscriptions
            .iter()
            .filter(|(_, s)| s.share.is_some())
            .map(|(text, s)| (text.as_str(), &s.filter))
    }

    /// Takes out the messages its groups gave it that it has not sent (and,
    /// `with_inflight`, those the client has not acknowledged), for the shared
    /// subscription `only` or for all, so the groups can give them to others.
    pub fn take_shared(&mut self, only: Option<&str>, with_inflight: bool) -> Vec<SharedMessage> {
        let wanted = |subscription: &str| only.is_none_or(|o| o == subscription);
        let mut taken = Vec::new();
        // The inbox cannot be picked from: what stays goes on to `pending`.
        while let Ok(message) = self.shared.inbox.try_recv() {
            if wanted(&message.subscription) {
                taken.push(message);
            } else {
                self.pending.push_back(Delivery {
                    event: message.event,
                    retained_for: None,
                    share: Some(message.subscription),
                });
            }
        }
        self.pending.retain(|delivery| match &delivery.share {
            Some(subscription) if wanted(subscription) => {
                taken.push(SharedMessage {
                    subscription: subscription.clone(),
                    event: delivery.event.clone(),
                });
                false
            }
            _ => true,
        });
        if with_inflight {
            // A QoS 2 message whose PUBREC came is the client's already.
            self.inflight.retain(|outgoing| match &outgoing.shared {
                Some(message)
                    if wanted(&message.subscription) && outgoing.state != OutState::Released =>
                {
                    taken.push(message.clone());
                    false
                }
                _ => true,
            });
        }
        taken
    }

    pub fn new(expiry: u32) -> Self {
        Self {
            subscriptions: BTreeMap::new(),
            feed: None,
            lagged: false,
            inflight: VecDeque::new(),
            incoming: HashMap::new(),
            next_packet_id: 1,
            pending: VecDeque::new(),
            backfills: VecDeque::new(),
            expiry,
            resume_from: None,
            stored: false,
            shared: Membership::new(),
        }
    }

    /// A packet id not in flight. The window is below 65,535, so one is free.
    pub fn allocate_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|o| o.packet_id == id) {
                return id;
            }
        }
    }

    /// The position to resume the change stream from after a cut-off: what
    /// the feed has handed over (deliveries in flight are resent on their own).
    pub fn position(&self) -> u64 {
        self.feed
            .as_ref()
            .map(Feed::position)
            .or(self.resume_from)
            .unwrap_or(0)
    }

    /// The position to save: before every change taken from the feed but
    /// not yet sent, so a restart (or another node) replays them. What is in
    /// flight is saved with the session and sent again as it was.
    pub fn safe_position(&self) -> u64 {
        // Messages from shared subscriptions are not the feed's: not counted.
        let unsent = self
            .pending
            .iter()
            .filter(|d| d.share.is_none())
            .filter_map(|d| d.event.seq)
            .min();
        match unsent {
            Some(seq) => self.position().min(seq.saturating_sub(1)),
            None => self.position(),
        }
    }

    /// The durable form of this session.
    pub fn saved(&self) -> SavedSession {
        // What is in flight goes with it up to SAVED_INFLIGHT_BYTES; past
        // that the change log replays stored changes instead (a transient
        // message is lost with the connection, as if at QoS 0). Its groups'
        // messages go back to the groups.
        let mut inflight = Vec::new();
        let mut bytes = 0;
        let mut replay_from: Option<u64> = None;
        for outgoing in self.inflight.iter().filter(|o| o.shared.is_none()) {
            match SavedOutgoing::of(outgoing) {
                Some(saved) if bytes + saved.publish.len() <= SAVED_INFLIGHT_BYTES => {
                    bytes += saved.publish.len();
                    inflight.push(saved);
                }
                _ => {
                    if let Some(seq) = outgoing.seq {
                        replay_from = Some(replay_from.map_or(seq, |r| r.min(seq)));
                    }
                }
            }
        }
        let resume_from = match replay_from {
            Some(seq) => self.safe_position().min(seq.saturating_sub(1)),
            None => self.safe_position(),
        };
        SavedSession {
            expiry: self.expiry,
            resume_from,
            saved_at_ms: now_ms(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(text, s)| SavedSubscription {
                    filter: text.clone(),
                    qos: s.qos.as_u8(),
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    id: s.id.map(NonZeroU32::get),
                })
                .collect(),
            inflight,
        }
    }

    /// A session read back after a restart: its subscriptions, and a feed to
    /// be rebuilt from the change log at the saved position.
    pub fn restore(saved: SavedSession) -> Self {
        let mut session = Self::new(saved.expiry);
        session.resume_from = Some(saved.resume_from);
        session.lagged = true;
        session.stored = true;
        session.inflight = saved
            .inflight
            .iter()
            .filter_map(SavedOutgoing::restore)
            .collect();
        for s in saved.subscriptions {
            let (share, text) = match s
                .filter
                .strip_prefix("$share/")
                .and_then(|r| r.split_once('/'))
            {
                Some((group, filter)) => (Some(group.to_owned()), filter.to_owned()),
                None => (None, s.filter.clone()),
            };
            let Ok(filter) = TopicFilter::parse(&text) else {
                continue;
            };
            session.subscriptions.insert(
                s.filter,
                Subscription {
                    filter,
                    share,
                    qos: QoS::from_u8(s.qos).unwrap_or(QoS::AtMostOnce),
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    id: s.id.and_then(NonZeroU32::new),
                },
            );
        }
        session
    }
}

/// A persistent session as kept in the store across restarts.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedSession {
    pub expiry: u32,
    pub resume_from: u64,
    /// Unix milliseconds; the expiry counts from here.
    pub saved_at_ms: u64,
    pub subscriptions: Vec<SavedSubscription>,
    /// Messages the client had not finished acknowledging, oldest first:
    /// sent again with their packet ids when it resumes [MQTT-4.4.0-1].
    #[serde(default)]
    pub inflight: Vec<SavedOutgoing>,
}

/// How much of what is in flight (encoded) a saved session keeps: a saved
/// session is one etcd value, which etcd caps at 1.5 MiB.
const SAVED_INFLIGHT_BYTES: usize = 256 * 1024;

/// A message in flight, as kept with its session.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedOutgoing {
    pub packet_id: u16,
    pub seq: Option<u64>,
    /// Waiting for 0: PUBACK, 1: PUBREC, 2: PUBCOMP.
    pub state: u8,
    /// The PUBLISH as MQTT 5 encodes it (our codec reads it back), base64.
    #[serde(with = "base64_bytes")]
    pub publish: Vec<u8>,
}

impl SavedOutgoing {
    fn of(outgoing: &Outgoing) -> Option<Self> {
        let mut publish = BytesMut::new();
        encode(
            &Packet::Publish(outgoing.publish.clone()),
            ProtocolVersion::V5,
            &mut publish,
        )
        .ok()?;
        Some(Self {
            packet_id: outgoing.packet_id,
            seq: outgoing.seq,
            state: match outgoing.state {
                OutState::Acked => 0,
                OutState::Received => 1,
                OutState::Released => 2,
            },
            publish: publish.to_vec(),
        })
    }

    fn restore(&self) -> Option<Outgoing> {
        let mut bytes = BytesMut::from(self.publish.as_slice());
        // Read as a client reads what a server sent (subscription ids and all).
        let Ok(Some(Packet::Publish(publish))) =
            decode_as_client(&mut bytes, ProtocolVersion::V5, usize::MAX)
        else {
            return None;
        };
        Some(Outgoing {
            packet_id: self.packet_id,
            seq: self.seq,
            publish,
            state: match self.state {
                0 => OutState::Acked,
                1 => OutState::Received,
                _ => OutState::Released,
            },
            unsent: false,
            shared: None,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedSubscription {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub id: Option<u32>,
}

/// Bytes as one base64 string in JSON, not an array of numbers.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(input)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::properties::PublishProperties;

    /// What is in flight moves with a saved session (to another node, or
    /// across a restart) as it was sent: same packet id, same message, its
    /// subscription ids too; the saved position does not replay it.
    #[test]
    fn a_saved_session_keeps_its_messages_in_flight() {
        let mut session = Session::new(60);
        session.resume_from = Some(41);
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "sensors/a".into(),
            packet_id: std::num::NonZeroU16::new(7),
            payload: bytes::Bytes::from_static(b"{\"n\":1}"),
            properties: PublishProperties {
                subscription_identifiers: vec![NonZeroU32::new(3).unwrap()],
                ..PublishProperties::default()
            },
        };
        session.inflight.push_back(Outgoing {
            packet_id: 7,
            seq: Some(41),
            publish: publish.clone(),
            state: OutState::Acked,
            unsent: false,
            shared: None,
        });
        let json = serde_json::to_vec(&session.saved()).unwrap();
        let restored = Session::restore(serde_json::from_slice(&json).unwrap());
        assert_eq!(restored.resume_from, Some(41));
        let outgoing = restored.inflight.front().expect("the message in flight");
        assert_eq!(restored.inflight.len(), 1);
        assert_eq!((outgoing.packet_id, outgoing.seq), (7, Some(41)));
        assert_eq!(outgoing.state, OutState::Acked);
        assert_eq!(outgoing.publish, publish);
    }

    /// Past its byte cap, what is in flight is replayed from the change log
    /// instead: the saved position goes back to before the first left out.
    #[test]
    fn a_saved_session_replays_what_is_in_flight_past_its_cap() {
        let mut session = Session::new(60);
        session.resume_from = Some(100);
        let big = bytes::Bytes::from(vec![b'x'; 100 * 1024]);
        for (n, seq) in [90u64, 91, 92, 93].into_iter().enumerate() {
            let id = u16::try_from(n + 1).unwrap();
            session.inflight.push_back(Outgoing {
                packet_id: id,
                seq: Some(seq),
                publish: Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: "sensors/a".into(),
                    packet_id: std::num::NonZeroU16::new(id),
                    payload: big.clone(),
                    properties: PublishProperties::default(),
                },
                state: OutState::Acked,
                unsent: false,
                shared: None,
            });
        }
        let saved = session.saved();
        assert_eq!(saved.inflight.len(), 2, "two of 100 KiB fit in 256 KiB");
        assert_eq!(saved.resume_from, 91, "92 and 93 are replayed");
    }
}

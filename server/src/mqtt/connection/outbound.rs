//! What goes out to the client: changes from the feed, its backfills and its
//! groups, within its window and the unwritten-bytes cap, with the QoS flows.

use super::*;

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    /// Sends queued deliveries while the client's window has room.
    /// Returns whether it stopped for the unwritten-bytes cap with more to send.
    pub(super) fn drain_pending(&mut self) -> bool {
        // A resumed session's own messages go again first, as the window allows.
        while self.resend_left > 0
            && self.session.inflight.len().saturating_sub(self.resend_left) < self.window
        {
            if self.out.len() >= MAX_UNWRITTEN {
                return true;
            }
            match self.session.inflight.iter().position(|o| o.unsent) {
                Some(at) => self.resend_one(at),
                None => self.resend_left = 0,
            }
        }
        if self.resend_left > 0 {
            return false;
        }
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

    pub(super) fn deliver(&mut self, delivery: &Delivery) {
        let event = &delivery.event;
        let topic = topics::topic_of(event);
        if !self.allows(Action::Subscribe, &topic) {
            return;
        }
        // A live change carries what it was published with; a stored plain
        // topic's message read back from the store keeps it in its record.
        let stored_meta = event
            .mqtt
            .is_none()
            .then(|| topics::published_with(event))
            .flatten();
        let meta = event.mqtt.as_deref().or(stored_meta.as_ref());
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
            // Any id encodes to the same size; the real one is taken once it is sent.
            packet_id: (qos != QoS::AtMostOnce).then_some(NonZeroU16::MIN),
            payload: topics::payload_of(event),
            properties: PublishProperties::default(),
        };
        let alias = self.topic_aliases.alias_for(&publish.topic);
        if self.version == ProtocolVersion::V5 {
            publish.properties = properties_for(event, meta, ids.clone(), true);
            // The change's own metadata is ours to leave out where the
            // client's Maximum Packet Size has no room for it.
            if !self.fits(&publish, alias) {
                publish.properties = properties_for(event, meta, ids, false);
            }
        }
        if !self.fits(&publish, alias) {
            // Too large for this client: discarded as if it had been
            // delivered and acknowledged [MQTT-3.1.2-25]; the connection stays.
            tracing::debug!(client_id = %self.client_id, topic = %publish.topic, "message larger than the client's Maximum Packet Size not sent");
            return;
        }
        if qos != QoS::AtMostOnce {
            let id = self.session.allocate_packet_id();
            publish.packet_id = NonZeroU16::new(id);
            // The session keeps the whole topic: aliases end with the connection.
            self.session.inflight.push_back(Outgoing {
                packet_id: id,
                seq: event.seq,
                publish: publish.clone(),
                unsent: false,
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
        if let Some(alias) = alias {
            self.topic_aliases.apply(alias, &mut publish);
        }
        self.broker.store().metrics().message_out(Protocol::Mqtt);
        self.send(&Packet::Publish(publish));
    }

    /// Whether `publish`, sent with `alias`, is within the client's Maximum Packet Size.
    fn fits(&self, publish: &Publish, alias: Option<Alias>) -> bool {
        let mut wire = publish.clone();
        if let Some(alias) = alias {
            wire.properties.topic_alias = Some(alias.number);
            if alias.known {
                wire.topic.clear();
            }
        }
        encoded_len(&Packet::Publish(wire), self.version)
            .is_ok_and(|len| len <= self.client_max_packet)
    }

    pub(super) fn finish_outgoing(&mut self, id: u16, state: OutState) {
        if let Some(at) = self
            .session
            .inflight
            .iter()
            .position(|o| o.packet_id == id && o.state == state)
            && let Some(done) = self.session.inflight.remove(at)
            && done.unsent
        {
            // Acknowledged before it went again: one fewer to resend.
            self.resend_left = self.resend_left.saturating_sub(1);
        }
    }

    /// On session resume: everything unacknowledged goes again, in order,
    /// PUBLISH with DUP set, PUBREL as it was [MQTT-4.4.0-1] — no more at once
    /// than the client's Receive Maximum now allows (they all count against
    /// it, MQTT 5 §4.9); `drain_pending` sends the rest as acks come.
    pub(super) fn resend_inflight(&mut self) {
        // A message queued before the client lost read access to its topic
        // is not sent again (the lesson of CVE-2021-34434).
        let guard = self.broker.guard().clone();
        let principal = &self.principal;
        self.session.inflight.retain(|o| {
            o.state == OutState::Released
                || guard.allows(principal, Action::Subscribe, &o.publish.topic)
        });
        for outgoing in &mut self.session.inflight {
            outgoing.unsent = true;
        }
        self.resend_left = self.session.inflight.len();
    }

    /// Sends the in-flight message at `at` again.
    fn resend_one(&mut self, at: usize) {
        let Some(outgoing) = self.session.inflight.get_mut(at) else {
            return;
        };
        outgoing.unsent = false;
        self.resend_left = self.resend_left.saturating_sub(1);
        let packet = match outgoing.state {
            OutState::Acked | OutState::Received => {
                let mut publish = outgoing.publish.clone();
                publish.dup = true;
                // The client may have come back with a smaller Maximum
                // Packet Size: what no longer fits is dropped, as if delivered.
                if !self.fits(&publish, None) {
                    self.session.inflight.remove(at);
                    return;
                }
                Packet::Publish(publish)
            }
            OutState::Released => match NonZeroU16::new(outgoing.packet_id) {
                Some(id) => Packet::PubRel(Ack::new(id)),
                None => return,
            },
        };
        self.send(&packet);
    }
}

/// Moves the next messages into `pending`: a page of the oldest backfill
/// while there is one (no live change may overtake it), else the next live
/// change or the next message a shared subscription's group chose this
/// session for, whichever is ready (`select!` picks fairly, so a busy group
/// cannot starve the feed, nor the other way round).
pub(super) async fn pull(session: &mut Session, store: &crate::store::Store) -> Result<(), End> {
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

pub(super) fn shared_delivery(message: SharedMessage) -> Delivery {
    Delivery {
        event: message.event,
        retained_for: None,
        share: Some(message.subscription),
    }
}

/// MQTT 5 properties of a delivery: what the publisher sent, the change's
/// metadata (`with_change`) for stored records, and the matching
/// subscription identifiers. A plain topic's message gets the publisher's
/// user properties alone, as from any broker [MQTT-3.3.2-17].
pub(super) fn properties_for(
    event: &ChangeEvent,
    meta: Option<&MqttMeta>,
    subscription_identifiers: Vec<NonZeroU32>,
    with_change: bool,
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
    if let Some(seq) = event.seq
        && with_change
        && event.table != crate::store::MQTT_TABLE
    {
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

pub(super) fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Rest => "rest",
        Origin::Ws => "ws",
        Origin::Mqtt => "mqtt",
        Origin::System => "system",
    }
}

/// A topic alias towards the client: its number, and whether the client
/// already knows which topic it stands for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Alias {
    number: NonZeroU16,
    known: bool,
}

/// The topic aliases this connection sends to an MQTT 5 client that allows
/// them (its Topic Alias Maximum): the first message on a topic carries the
/// topic and a new alias, later ones the alias alone. Once all are given out
/// new topics go whole. They last as long as the connection [MQTT-3.3.2-7].
pub(super) struct TopicAliases {
    /// The client's Topic Alias Maximum, capped at ours (what it costs us).
    max: u16,
    given: HashMap<String, NonZeroU16>,
}

impl TopicAliases {
    pub(super) fn new(client_max: u16, our_max: u16) -> Self {
        Self {
            max: client_max.min(our_max),
            given: HashMap::new(),
        }
    }

    /// The alias `topic` would go with, if any; nothing is given out yet.
    pub(super) fn alias_for(&self, topic: &str) -> Option<Alias> {
        if let Some(number) = self.given.get(topic) {
            return Some(Alias {
                number: *number,
                known: true,
            });
        }
        let next = u16::try_from(self.given.len()).ok()?.checked_add(1)?;
        let number = NonZeroU16::new(next)?;
        (next <= self.max).then_some(Alias {
            number,
            known: false,
        })
    }

    /// Gives out `alias` (if new) and puts it on `publish`.
    pub(super) fn apply(&mut self, alias: Alias, publish: &mut Publish) {
        publish.properties.topic_alias = Some(alias.number);
        if alias.known {
            publish.topic.clear();
        } else {
            self.given.insert(publish.topic.clone(), alias.number);
        }
    }
}

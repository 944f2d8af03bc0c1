//! What a client sends in: its publishes written through the store in the
//! order it sent them, acknowledged once durable, and its will.

use super::*;

/// A client publish on its way to durability, acknowledged in arrival order.
pub(super) type InboundWrite = Pin<Box<dyn Future<Output = Inbound> + Send>>;

pub(super) struct Inbound {
    packet_id: Option<u16>,
    qos: QoS,
    reason: ReasonCode,
    /// It went through the store's writer queue (see `Connection::queued`).
    queued: bool,
}

/// A client publish handed to the store.
pub(super) struct Applied {
    /// Resolves when the message is durable (stored) or on the bus (transient).
    pub(super) done: Pin<Box<dyn Future<Output = ReasonCode> + Send>>,
    /// Whether it went through the store's writer queue.
    queued: bool,
}

impl Applied {
    pub(super) fn ready(reason: ReasonCode) -> Self {
        Self {
            done: Box::pin(std::future::ready(reason)),
            queued: false,
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    pub(super) async fn on_publish(&mut self, mut publish: Publish) -> Result<(), End> {
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
                self.report_refusal(RefusedAction::Publish {
                    topic: publish.topic.clone(),
                });
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
    pub(super) fn push_ready(&mut self, packet_id: Option<u16>, qos: QoS, reason: ReasonCode) {
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
    pub(super) fn acknowledge(&mut self, done: Inbound) {
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
}

/// Writes a client publish through the store: retained is a durable put (or,
/// empty, a delete) of the topic's record; not retained is a message on the
/// bus — straight away, or `behind_writes` still queued at the store, through
/// the writer's queue after them. Returns once the message is queued.
pub(super) async fn apply_publish(
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
            // Waits (on etcd) while the way to the other nodes is full: the
            // connection reads no more until there is room.
            let published = store
                .publish_waiting(table, id, value, Origin::Mqtt, Some(meta))
                .await;
            return Applied::ready(match published {
                Ok(()) => ReasonCode::Success,
                Err(e) => reason_for(&e),
            });
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
        // A plain topic's retained message keeps its QoS and properties.
        let value = match target {
            Target::Topic(_) => Ok(topics::retained_value(&publish.payload, &meta)),
            Target::Record { .. } => target.value(&publish.payload),
        };
        match value {
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

pub(super) fn meta_of(publish: &Publish, client_id: &str) -> MqttMeta {
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

/// Topic names clients publish to: within the configured length and depth.
pub(super) fn check_topic(topic: &str, limits: &crate::mqtt::Limits) -> Result<(), ReasonCode> {
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(ReasonCode::TopicNameInvalid);
    }
    check_levels(topic, limits).map_err(|_| ReasonCode::TopicNameInvalid)
}

pub(super) fn check_levels(topic: &str, limits: &crate::mqtt::Limits) -> Result<(), ()> {
    if topic.len() > limits.max_topic_length || topic.split('/').count() > limits.max_topic_levels {
        return Err(());
    }
    Ok(())
}

pub(super) fn reason_for(error: &StoreError) -> ReasonCode {
    match error {
        StoreError::Invalid(_) => ReasonCode::PayloadFormatInvalid,
        StoreError::BadName(_) | StoreError::NoSuchTable(_) => ReasonCode::TopicNameInvalid,
        StoreError::ShuttingDown => ReasonCode::ServerUnavailable,
        StoreError::VersionMismatch { .. } => ReasonCode::ImplementationSpecificError,
        _ => ReasonCode::UnspecifiedError,
    }
}

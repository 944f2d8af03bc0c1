//! A client's will: published when its connection ends
//! without a clean DISCONNECT, after its delay unless the client is back.
//!
//! While the client is connected its will is also kept with its claim of the
//! client id in the store, so that when this node dies with the connection,
//! one surviving node sends it (on etcd; the embedded store is the only
//! node). It is kept as its delay (4 bytes, big-endian, already capped by the
//! session's expiry) followed by the will as an MQTT 5 PUBLISH: read back by
//! the codec we have, so there is no second format to keep in step.

use super::*;

/// The will as the store keeps it with the claim; `None` if it cannot be
/// encoded (then it lives only as long as this node).
pub(super) fn kept(will: &Will, session_expiry: u32) -> Option<Vec<u8>> {
    let mut publish = as_publish(will.clone());
    // A PUBLISH at QoS 1 or 2 carries a packet id; it is dropped on reading.
    if publish.qos != QoS::AtMostOnce {
        publish.packet_id = NonZeroU16::new(1);
    }
    let mut out = BytesMut::new();
    out.extend_from_slice(&delay_of(will, session_expiry).to_be_bytes());
    encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut out).ok()?;
    Some(out.to_vec())
}

/// A will kept by [`kept`], as the PUBLISH to send and its delay in seconds.
fn from_kept(bytes: &[u8]) -> Option<(Publish, u32)> {
    let (delay, packet) = bytes.split_first_chunk::<4>()?;
    let mut buf = BytesMut::from(packet);
    match decode(&mut buf, Some(ProtocolVersion::V5), usize::MAX) {
        Ok(Some(Packet::Publish(mut publish))) => {
            publish.packet_id = None;
            Some((publish, u32::from_be_bytes(*delay)))
        }
        _ => None,
    }
}

/// How long the will waits after the connection ends: its Will Delay
/// Interval, but never past the session's end [MQTT-3.1.3-9].
fn delay_of(will: &Will, session_expiry: u32) -> u32 {
    will.properties
        .will_delay_interval
        .unwrap_or(0)
        .min(session_expiry)
}

/// The will as the message it becomes.
fn as_publish(will: Will) -> Publish {
    Publish {
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
    }
}

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    /// Deals with the will as the connection ends: `publish` if the client
    /// did not leave cleanly (at once, or after its delay unless the client
    /// is back by then), and in every case takes it off the claim in the
    /// store once this node has dealt with it.
    pub(super) async fn end_will(&mut self, publish: bool) {
        let Some(will) = self.will.take() else {
            return;
        };
        let broker = self.broker.clone();
        let client_id = self.client_id.clone();
        let claimed = self.claimed;
        let delay = delay_of(&will, self.session.expiry);
        if !publish {
            settle(&broker, &client_id, claimed).await;
            return;
        }
        if delay == 0 {
            settle(&broker, &client_id, claimed).await;
            publish_will(&broker, as_publish(will), &client_id).await;
            return;
        }
        let generation = self.generation;
        let mut shutdown = broker.shutdown_signal();
        broker.tasks().clone().spawn(async move {
            // A delayed will does not outlive the server: at shutdown it
            // goes out at once rather than being lost.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {}
                () = stopped(&mut shutdown) => {}
            }
            // Back here, or on another node (whose claim replaced ours).
            if broker.not_reconnected(&client_id, generation)
                && settle(&broker, &client_id, claimed).await
            {
                publish_will(&broker, as_publish(will), &client_id).await;
            }
        });
    }
}

/// Takes the will off this connection's claim (revision `claimed`): whether
/// that claim was still the client's latest. When the store cannot say, the
/// will is taken as still ours: sent twice (should this node also die) is
/// better than never.
async fn settle(broker: &Broker, client_id: &str, claimed: u64) -> bool {
    match broker.store().settle_will(client_id, claimed).await {
        Ok(latest) => latest,
        Err(e) => {
            tracing::warn!(%client_id, "cannot take the will off the client's claim: {e}");
            true
        }
    }
}

/// Sends the will of a client whose node died (`kept` as that node stored
/// it): this node won the race to send it. After its delay, unless the
/// client has connected again somewhere by then.
pub(in crate::mqtt) async fn send_orphaned_will(broker: Broker, client_id: String, kept: Vec<u8>) {
    let Some((publish, delay)) = from_kept(&kept) else {
        tracing::warn!(%client_id, "a dead node's client's will cannot be read: dropped");
        return;
    };
    if delay > 0 {
        let mut shutdown = broker.shutdown_signal();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {}
            () = stopped(&mut shutdown) => {}
        }
        if let Ok(true) = broker.store().client_claimed(&client_id).await {
            return;
        }
    }
    tracing::debug!(%client_id, "sending the will of a client whose node died");
    publish_will(&broker, publish, &client_id).await;
}

async fn publish_will(broker: &Broker, publish: Publish, client_id: &str) {
    let meta = Arc::new(inbound::meta_of(&publish, client_id));
    // The connection's own writes are done by now: nothing to queue behind.
    let reason = inbound::apply_publish(broker, publish, meta, false)
        .await
        .done
        .await;
    if reason.is_error() {
        tracing::warn!(%client_id, ?reason, "will message not published");
    }
}

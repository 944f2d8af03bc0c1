//! An MQTT 3.1.1 client as users run one (rumqttc), with the publishes it
//! receives on a channel, for tests that watch behaviour rather than packets.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
use tokio::sync::mpsc;

pub struct Mqtt {
    pub client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    /// CONNACK and SUBACKs.
    acks: mpsc::UnboundedReceiver<rumqttc::Packet>,
    /// The CONNACK's session present flag.
    pub session_present: bool,
}

impl Mqtt {
    /// Connects as `id` with a clean session and a 30 s keep-alive.
    pub async fn connect(addr: SocketAddr, id: &str) -> Self {
        Self::connect_with(options(addr, id)).await
    }

    /// Connects with `options` (see [`options`]); panics without a CONNACK.
    pub async fn connect_with(options: MqttOptions) -> Self {
        let (client, mut events) = AsyncClient::new(options, 1024);
        let (acks_tx, mut acks) = mpsc::unbounded_channel();
        let (tx, publishes) = mpsc::unbounded_channel();
        // Ends at the first error: a client that lost its server is done
        // (rumqttc would otherwise reconnect to the same address).
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(rumqttc::Packet::Publish(p)) => {
                        let _ = tx.send(p);
                    }
                    Event::Incoming(
                        packet @ (rumqttc::Packet::ConnAck(_) | rumqttc::Packet::SubAck(_)),
                    ) => {
                        let _ = acks_tx.send(packet);
                    }
                    _ => {}
                }
            }
        });
        let ack = tokio::time::timeout(Duration::from_secs(10), acks.recv()).await;
        let session_present = match ack {
            Ok(Some(rumqttc::Packet::ConnAck(ack))) => ack.session_present,
            other => panic!("no CONNACK: {other:?}"),
        };
        Self {
            client,
            publishes,
            acks,
            session_present,
        }
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("SUBSCRIBE sent");
        let ack = tokio::time::timeout(Duration::from_secs(10), self.acks.recv()).await;
        assert!(
            matches!(ack, Ok(Some(rumqttc::Packet::SubAck(_)))),
            "{ack:?}"
        );
    }

    /// The next publish received, if one comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<rumqttc::Publish> {
        tokio::time::timeout(within, self.publishes.recv())
            .await
            .ok()
            .flatten()
    }
}

/// Options for `id` at `addr`: a 30 s keep-alive, 1 MiB packets, a clean session.
pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

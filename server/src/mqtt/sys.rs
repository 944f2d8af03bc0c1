//! `$SYS/broker/...`: the broker's statistics, published every few seconds as
//! Mosquitto does, so monitoring tools that read them work unchanged. They are
//! transient messages (not stored); the `$` keeps them from `#` subscribers.

use std::time::{Duration, Instant};

use app::event::Origin;

use super::Broker;
use super::topics::raw_value;
use crate::metrics::Protocol;
use crate::store::MQTT_TABLE;

/// How often the statistics go out (Mosquitto's `sys_interval` default).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Publishes the statistics every `interval` until the task is dropped.
pub async fn publish_statistics(broker: Broker, interval: Duration) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let store = broker.store();
        let (received, sent) = store.metrics().messages(Protocol::Mqtt);
        let figures = [
            ("version", format!("marquee {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{} seconds", started.elapsed().as_secs())),
            ("clients/connected", broker.connection_count().to_string()),
            (
                "clients/disconnected",
                broker.offline_sessions().to_string(),
            ),
            ("messages/received", received.to_string()),
            ("messages/sent", sent.to_string()),
            ("store/last_seq", store.last_seq().to_string()),
        ];
        for (name, value) in figures {
            let topic = format!("$SYS/broker/{name}");
            if let Err(e) = store.publish_here(
                MQTT_TABLE,
                &topic,
                raw_value(value.as_bytes()),
                Origin::System,
            ) {
                tracing::debug!("cannot publish {topic}: {e}");
            }
        }
    }
}

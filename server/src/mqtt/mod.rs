//! MQTT 3.1.1 (protocol level 4) and MQTT 5.0 (level 5).
//!
//! [`codec`] turns bytes into [`Packet`]s and back. It is pure and synchronous:
//! the connection task owns a `BytesMut` read buffer and calls [`decode`] after
//! every read, and [`encode`] into its write buffer. Malformed input is refused
//! with the reason code the specification names for it
//! ([`DecodeError::reason_code`]); nothing in here panics on input.
//!
//! [`Broker`] holds the sessions, the shared subscriptions' groups and the
//! limits; `listener` accepts connections and `connection` runs each one
//! (its QoS flows, in `inbound`, `outbound` and `subscriptions`), with every
//! message going through the store and the bus ([`topics`] says how topics
//! map onto records). Nothing here imports in a circle: `connection` uses
//! `broker`, `listener` uses both.

mod broker;
pub mod codec;
mod connection;
mod listener;
pub mod properties;
pub mod reason;
mod session;
mod shares;
mod sys;
pub mod topics;
pub mod websocket;
mod wire;

#[cfg(test)]
mod tests;

pub use broker::{Broker, Limits, MAX_PACKET_SIZE};
pub use codec::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, MAX_REMAINING_LENGTH,
    Packet, PacketId, PacketType, ProtocolVersion, Publish, QoS, RetainHandling, SubAck, Subscribe,
    Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, Will, connect_protocol_version,
    decode, decode_as_client, encode, encoded_len,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, PropertyId, PublishProperties, SubscribeProperties, UnsubscribeProperties,
    UserProperties, WillProperties,
};
pub use reason::ReasonCode;

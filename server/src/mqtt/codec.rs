//! The control packets of MQTT 3.1.1 and 5.0, and the functions that read
//! them from a byte buffer and write them to one.
//!
//! [`decode`] reads what a client sent (the broker's side); [`decode_as_client`]
//! reads what a server sent (test clients, simulators). Both take one packet
//! off the front of the buffer when it is complete, leave the buffer alone
//! when it is not (`Ok(None)`) and also when the packet is refused (`Err`),
//! so the caller can still look at what was refused.
//!
//! Validation follows the specification, and each refusal carries the reason
//! code it names ([`DecodeError::reason_code`]). Where it names none (a packet
//! identifier of 0, wildcards in a Topic Name, a reason code not defined for
//! the packet) the input is treated as a Malformed Packet. A reason code the
//! packet defines but only the other side may send (DISCONNECT 0x8E "Session
//! taken over" from a client, §3.14.2.1) is a Protocol Error: the packet
//! parses, and what it says is not allowed (the definition in §1.2).
//!
//! Names — client identifiers, user names, Topic Names and Topic Filters —
//! are refused, in both directions, when they hold a control character
//! (U+0001–U+001F, U+007F–U+009F) or a Unicode non-character (U+FFFF and the
//! like), besides what every string is refused for (ill-formed UTF-8, an
//! encoded surrogate, U+0000). The specification only says these SHOULD NOT
//! appear and a receiver MAY treat them as a Malformed Packet (§1.5.4); we do,
//! as Mosquitto does, because a name ends up as a key, a log field and a level
//! of the topic tree. Free text (user properties, reason strings) keeps them.
//! See `wire` for the one predicate both directions use.
//!
//! A CONNECT whose protocol name is not "MQTT" (or 3.1's "MQIsdp") is not
//! from an MQTT client we could answer, and is refused without a CONNACK
//! ([`DecodeError::NotMqtt`], [MQTT-3.1.2-1]).
//!
//! Topic filters are checked here as names only (the characters above):
//! whether a filter is well formed (`#` last, `+` alone in its level, not
//! empty) is answered per filter in SUBACK/UNSUBACK by the broker, not by
//! refusing the whole packet.

use std::num::NonZeroU16;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PropertyId, PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use super::reason::ReasonCode;
use super::wire::{
    Counter, MAX_VARINT, Reader, Sink, is_valid_topic_name, parse_varint, put_binary, put_name,
    put_prefixed, put_string, put_varint, varint_len,
};

/// The largest Remaining Length a packet can declare (four length bytes).
pub const MAX_REMAINING_LENGTH: usize = MAX_VARINT;

/// A Packet Identifier, which is never 0 [MQTT-2.2.1-3].
pub type PacketId = NonZeroU16;

/// The protocol spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The Protocol Level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3, which no packet may carry.
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// When retained messages are sent for a new subscription (MQTT 5 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist yet.
    SendIfNewSubscription = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// The control packet types (§2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    /// MQTT 5 only; type 15 is reserved in 3.1.1.
    Auth = 15,
}

impl PacketType {
    /// Reads the high nibble of the first byte; 0 is reserved.
    pub fn from_nibble(value: u8) -> Option<Self> {
        use PacketType as P;
        Some(match value {
            1 => P::Connect,
            2 => P::ConnAck,
            3 => P::Publish,
            4 => P::PubAck,
            5 => P::PubRec,
            6 => P::PubRel,
            7 => P::PubComp,
            8 => P::Subscribe,
            9 => P::SubAck,
            10 => P::Unsubscribe,
            11 => P::UnsubAck,
            12 => P::PingReq,
            13 => P::PingResp,
            14 => P::Disconnect,
            15 => P::Auth,
            _ => return None,
        })
    }

    /// The fixed header flags every packet but PUBLISH must carry [MQTT-2.1.3-1].
    fn required_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }

    /// Whether a client may send this packet.
    pub fn sent_by_client(self) -> bool {
        !matches!(
            self,
            Self::ConnAck | Self::SubAck | Self::UnsubAck | Self::PingResp
        )
    }

    /// Whether a server may send this packet (DISCONNECT only in MQTT 5).
    pub fn sent_by_server(self) -> bool {
        !matches!(
            self,
            Self::Connect | Self::Subscribe | Self::Unsubscribe | Self::PingReq
        )
    }
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The version the client asked for; it must match the version the
    /// packet is encoded with.
    pub protocol: ProtocolVersion,
    /// Clean Start (5) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// May be empty.
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Empty in 3.1.1.
    pub properties: ConnectProperties,
}

/// The will message in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// A Topic Name: not empty, no wildcards.
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Empty in 3.1.1.
    pub properties: WillProperties,
}

/// CONNACK (§3.2). In 3.1.1 the reason code travels as a return code 0–5:
/// see [`ReasonCode::to_v311_connack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason_code: ReasonCode,
    pub properties: ConnAckProperties,
}

/// PUBLISH (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in MQTT 5 with a Topic Alias property.
    pub topic: String,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// Shares the read buffer's memory when decoded.
    pub payload: Bytes,
    /// Empty in 3.1.1.
    pub properties: PublishProperties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4–3.7). 3.1.1 carries only the
/// packet identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: PacketId,
    pub reason_code: ReasonCode,
    pub properties: AckProperties,
}

impl Ack {
    /// A successful acknowledgement without properties.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// SUBSCRIBE (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    /// At least one.
    pub subscriptions: Vec<Subscription>,
    /// Empty in 3.1.1.
    pub properties: SubscribeProperties,
}

/// One topic filter of a SUBSCRIBE and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    pub options: SubscriptionOptions,
}

impl Subscription {
    pub fn new(filter: impl Into<String>, qos: QoS) -> Self {
        Self {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }
    }
}

/// Subscription options (MQTT 5 §3.8.3.1). 3.1.1 carries only the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

/// SUBACK (§3.9): one reason code per subscription, in order. In 3.1.1 any
/// failure travels as 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub reason_codes: Vec<ReasonCode>,
    pub properties: AckProperties,
}

/// UNSUBSCRIBE (§3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    /// At least one.
    pub filters: Vec<String>,
    /// Empty in 3.1.1.
    pub properties: UnsubscribeProperties,
}

/// UNSUBACK (§3.11). 3.1.1 has neither reason codes nor properties: they are
/// not sent, and are empty when decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub reason_codes: Vec<ReasonCode>,
    pub properties: AckProperties,
}

/// DISCONNECT (§3.14). In 3.1.1 only a client sends it, and it is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason_code: ReasonCode,
    pub properties: DisconnectProperties,
}

impl Default for Disconnect {
    fn default() -> Self {
        Self {
            reason_code: ReasonCode::NORMAL_DISCONNECTION,
            properties: DisconnectProperties::default(),
        }
    }
}

/// AUTH (§3.15), MQTT 5 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: AuthProperties,
}

/// Why bytes were refused. [`DecodeError::reason_code`] gives the MQTT 5
/// reason code to put in the CONNACK or DISCONNECT before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not parse as the packet they claim to be.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet parses but breaks a rule of the protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A property identifier the packet cannot carry: a Malformed Packet
    /// (§2.2.2.2; the rule and why it is 0x81 live in `properties`).
    #[error("malformed packet: property {0:?} is not allowed in this packet")]
    PropertyNotAllowed(PropertyId),
    /// A property that may appear once appeared again.
    #[error("protocol error: property {0:?} appears more than once")]
    DuplicateProperty(PropertyId),
    /// A property value the specification rules out.
    #[error("protocol error: property {0:?} has a value the specification does not allow")]
    InvalidPropertyValue(PropertyId),
    /// A reason code not defined for this packet.
    #[error("malformed packet: reason code {code:#04x} is not defined for {packet:?}")]
    InvalidReasonCode { packet: PacketType, code: u8 },
    /// A reason code the packet defines, but which only the other side may
    /// send ("Sent by" in §3.14.2.1 for DISCONNECT, §3.15.2.1 for AUTH).
    #[error("protocol error: {packet:?} with reason code {code:?} cannot come from this side")]
    ReasonCodeFromWrongSide {
        packet: PacketType,
        code: ReasonCode,
    },
    /// The first packet from a client must be CONNECT [MQTT-3.1.0-1].
    #[error("protocol error: the first packet was {0:?}, not CONNECT [MQTT-3.1.0-1]")]
    FirstPacketNotConnect(PacketType),
    /// CONNECT may be sent once per connection [MQTT-3.1.0-2].
    #[error("protocol error: a second CONNECT [MQTT-3.1.0-2]")]
    SecondConnect,
    /// A packet the peer's role never sends: CONNACK, SUBACK, UNSUBACK or
    /// PINGRESP from a client; CONNECT, SUBSCRIBE, UNSUBSCRIBE or PINGREQ
    /// (or a 3.1.1 DISCONNECT) from a server.
    #[error("protocol error: {0:?} cannot come from this side of the connection")]
    WrongDirection(PacketType),
    /// CONNECT asked for a protocol name or level other than MQTT 4 or 5.
    /// Answer with a CONNACK in the format of [`DecodeError::connack_version`]:
    /// return code 0x01 in 3.1.1, reason code 0x84 in 5 [MQTT-3.1.2-2].
    #[error("unsupported protocol version (level {level})")]
    UnsupportedProtocolVersion { level: u8 },
    /// CONNECT's protocol name is neither "MQTT" nor 3.1's "MQIsdp" (a wrong
    /// name, or the right letters with a wrong length). 5.0 lets a server
    /// answer CONNACK 0x84 "if it wishes to reveal that it is an MQTT Server"
    /// [MQTT-3.1.2-1] and 3.1.1 lets it just disconnect; we answer nothing,
    /// as Mosquitto does, since the peer may not read MQTT at all
    /// ([`DecodeError::connack_version`] is `None`).
    #[error("the protocol name is not \"MQTT\" [MQTT-3.1.2-1]")]
    NotMqtt,
    /// The packet (fixed header included) is larger than allowed.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
}

impl DecodeError {
    /// The MQTT 5 reason code for this refusal.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Malformed(_) | Self::PropertyNotAllowed(_) | Self::InvalidReasonCode { .. } => {
                ReasonCode::MalformedPacket
            }
            Self::Protocol(_)
            | Self::ReasonCodeFromWrongSide { .. }
            | Self::DuplicateProperty(_)
            | Self::InvalidPropertyValue(_)
            | Self::FirstPacketNotConnect(_)
            | Self::SecondConnect
            | Self::WrongDirection(_) => ReasonCode::ProtocolError,
            Self::UnsupportedProtocolVersion { .. } | Self::NotMqtt => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
        }
    }

    /// For [`DecodeError::UnsupportedProtocolVersion`]: the CONNACK format the
    /// client can read. Levels up to 4 (3.1 is level 3) get 3.1.1's, whose
    /// return code 0x01 means "unacceptable protocol version"; higher levels
    /// get MQTT 5's.
    pub fn connack_version(&self) -> Option<ProtocolVersion> {
        match self {
            Self::UnsupportedProtocolVersion { level } if *level <= 4 => {
                Some(ProtocolVersion::V311)
            }
            Self::UnsupportedProtocolVersion { .. } => Some(ProtocolVersion::V5),
            _ => None,
        }
    }
}

/// Why a packet could not be encoded. Nothing is written when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("remaining length {0} exceeds {MAX_REMAINING_LENGTH}")]
    PacketTooLarge(usize),
    #[error("{0} does not fit in a variable byte integer")]
    VarintTooLarge(usize),
    #[error("a string or binary field of {0} bytes is longer than 65535")]
    FieldTooLong(usize),
    #[error("strings must not contain U+0000 [MQTT-1.5.4-2]")]
    NulInString,
    /// A client id, user name, topic or filter holding a control character
    /// or a non-character, which the decoder refuses (see the module header).
    #[error("names must not contain control characters or non-characters (§1.5.4)")]
    DisallowedInName,
    #[error("reason code {code:?} is not defined for {packet:?}")]
    InvalidReasonCode {
        packet: PacketType,
        code: ReasonCode,
    },
    /// 3.1.1 has no CONNACK return code for this; it closes the connection
    /// without a CONNACK instead [MQTT-3.2.2-6].
    #[error("MQTT 3.1.1 has no CONNACK return code for {0:?}")]
    NoV311Equivalent(ReasonCode),
    #[error("{0}")]
    Invalid(&'static str),
}

// ------------------------------------------------------------------ decode

/// Which side sent the bytes being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    Client,
    Server,
}

/// Decodes one packet a client sent.
///
/// `version` is `None` until CONNECT has been received: then only CONNECT is
/// accepted, and its protocol level decides how it is read
/// ([`Connect::protocol`]). `max_packet_size` bounds the whole packet, fixed
/// header included, as MQTT 5's Maximum Packet Size does; a packet declaring
/// more is refused as soon as its fixed header is readable.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet, and takes
/// exactly one packet off `buf` otherwise. On `Err`, `buf` is left as it was;
/// the connection should be closed.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    decode_from(buf, Sender::Client, version, max_packet_size)
}

/// Decodes one packet a server sent, as [`decode`] does for a client's.
pub fn decode_as_client(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    decode_from(buf, Sender::Server, Some(version), max_packet_size)
}

/// The protocol version a CONNECT at the start of `buf` asks for, if it has
/// got that far and asks for 3.1.1 or 5. Lets a broker answer a refused
/// CONNECT (say, malformed) with a CONNACK the client can read.
pub fn connect_protocol_version(buf: &[u8]) -> Option<ProtocolVersion> {
    let (&first, rest) = buf.split_first()?;
    if first >> 4 != PacketType::Connect as u8 {
        return None;
    }
    let (_, len_len) = parse_varint(rest).ok()??;
    let mut r = Reader::new(rest.get(len_len..)?);
    let name = r.binary().ok()?;
    let level = r.u8().ok()?;
    (name == b"MQTT").then_some(())?;
    ProtocolVersion::from_level(level)
}

fn decode_from(
    buf: &mut BytesMut,
    sender: Sender,
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let kind = check_first_byte(first, sender, version)?;
    let Some((remaining, len_len)) = parse_varint(rest)? else {
        return Ok(None);
    };
    let header_len = 1 + len_len;
    let remaining = usize::try_from(remaining)
        .map_err(|_| DecodeError::Malformed("remaining length does not fit in memory"))?;
    if let Some(fixed) = fixed_remaining_length(kind, version)
        && remaining != fixed
    {
        // Known from the header: refused now rather than after waiting for
        // a body that should not exist.
        return Err(DecodeError::Malformed(
            "remaining length differs from the packet type's fixed length",
        ));
    }
    let total = header_len.saturating_add(remaining);
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    let Some(body) = buf.get(header_len..total) else {
        return Ok(None);
    };

    let mut payload = None;
    let mut packet = parse_body(kind, first & 0x0F, body, sender, version, &mut payload)?;

    // The publish payload is a view into the frame, not a copy.
    let payload = match payload {
        Some(Range { start, end }) if start < end => {
            let range = (header_len + start)..(header_len + end);
            if range.end > total {
                return Err(DecodeError::Malformed("payload outside the packet"));
            }
            Some(range)
        }
        _ => None,
    };
    let frame = buf.split_to(total).freeze();
    if let (Packet::Publish(publish), Some(range)) = (&mut packet, payload) {
        publish.payload = frame.slice(range);
    }
    Ok(Some(packet))
}

/// The Remaining Length a packet type always has, where it has one: 0 for
/// PINGREQ and PINGRESP (§3.12.1, §3.13.1) and 3.1.1's DISCONNECT (§3.14.1),
/// 2 for 3.1.1's CONNACK and acknowledgements (§3.2.1, §3.4.1–§3.7.1,
/// §3.11.1). MQTT 5 gives the others optional reason codes and properties.
fn fixed_remaining_length(kind: PacketType, version: Option<ProtocolVersion>) -> Option<usize> {
    use PacketType as P;
    let v311 = version == Some(ProtocolVersion::V311);
    match kind {
        P::PingReq | P::PingResp => Some(0),
        P::Disconnect if v311 => Some(0),
        P::ConnAck | P::PubAck | P::PubRec | P::PubRel | P::PubComp | P::UnsubAck if v311 => {
            Some(2)
        }
        _ => None,
    }
}

/// Checks the first byte before anything else arrives: the packet type, who
/// may send it now, and the fixed header flags.
fn check_first_byte(
    first: u8,
    sender: Sender,
    version: Option<ProtocolVersion>,
) -> Result<PacketType, DecodeError> {
    let kind = PacketType::from_nibble(first >> 4).ok_or(DecodeError::Malformed(
        "packet type 0 is reserved [MQTT-2.1.2]",
    ))?;
    if kind == PacketType::Auth && version == Some(ProtocolVersion::V311) {
        return Err(DecodeError::Malformed(
            "packet type 15 is reserved in MQTT 3.1.1",
        ));
    }
    match sender {
        Sender::Client => match (version, kind) {
            (None, PacketType::Connect) => {}
            (None, other) => return Err(DecodeError::FirstPacketNotConnect(other)),
            (Some(_), PacketType::Connect) => return Err(DecodeError::SecondConnect),
            (Some(_), other) if !other.sent_by_client() => {
                return Err(DecodeError::WrongDirection(other));
            }
            _ => {}
        },
        Sender::Server => {
            let v311_disconnect =
                kind == PacketType::Disconnect && version == Some(ProtocolVersion::V311);
            if !kind.sent_by_server() || v311_disconnect {
                return Err(DecodeError::WrongDirection(kind));
            }
        }
    }
    let flags = first & 0x0F;
    if kind == PacketType::Publish {
        if flags & 0b0110 == 0b0110 {
            return Err(DecodeError::Malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]"));
        }
        if flags & 0b1000 != 0 && flags & 0b0110 == 0 {
            return Err(DecodeError::Malformed(
                "DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]",
            ));
        }
    } else if flags != kind.required_flags() {
        return Err(DecodeError::Malformed(
            "reserved fixed header flags are wrong [MQTT-2.1.3-1]",
        ));
    }
    Ok(kind)
}

fn parse_body(
    kind: PacketType,
    flags: u8,
    body: &[u8],
    sender: Sender,
    version: Option<ProtocolVersion>,
    payload: &mut Option<Range<usize>>,
) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body);
    // Only CONNECT arrives without a version, and it carries its own.
    let v = version.unwrap_or(ProtocolVersion::V5);
    let packet = match kind {
        PacketType::Connect => Packet::Connect(parse_connect(&mut r)?),
        PacketType::ConnAck => Packet::ConnAck(parse_connack(&mut r, v)?),
        PacketType::Publish => Packet::Publish(parse_publish(&mut r, flags, v, sender, payload)?),
        PacketType::PubAck => Packet::PubAck(parse_ack(&mut r, v, kind)?),
        PacketType::PubRec => Packet::PubRec(parse_ack(&mut r, v, kind)?),
        PacketType::PubRel => Packet::PubRel(parse_ack(&mut r, v, kind)?),
        PacketType::PubComp => Packet::PubComp(parse_ack(&mut r, v, kind)?),
        PacketType::Subscribe => Packet::Subscribe(parse_subscribe(&mut r, v)?),
        PacketType::SubAck => Packet::SubAck(parse_suback(&mut r, v)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(parse_unsubscribe(&mut r, v)?),
        PacketType::UnsubAck => Packet::UnsubAck(parse_unsuback(&mut r, v)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(parse_disconnect(&mut r, v, sender)?),
        PacketType::Auth => Packet::Auth(parse_auth(&mut r, sender)?),
    };
    if !r.is_empty() {
        return Err(DecodeError::Malformed(
            "bytes left over after the packet's fields",
        ));
    }
    Ok(packet)
}

fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    NonZeroU16::new(r.u16()?).ok_or(DecodeError::Malformed("packet identifier 0 [MQTT-2.2.1-3]"))
}

fn reason(code: u8, packet: PacketType) -> Result<ReasonCode, DecodeError> {
    ReasonCode::from_u8(code)
        .filter(|c| c.is_valid_for(packet))
        .ok_or(DecodeError::InvalidReasonCode { packet, code })
}

/// [`reason`], for the packets whose reason codes say who may send them
/// (DISCONNECT's table in §3.14.2.1, which [MQTT-3.14.2-1] makes binding, and
/// AUTH's in §3.15.2.1). A code from the wrong side parses; it is "data that
/// is not allowed by the protocol", which §1.2 defines as a Protocol Error,
/// so 0x82, where a code the packet does not define at all is malformed.
fn reason_from(code: u8, packet: PacketType, sender: Sender) -> Result<ReasonCode, DecodeError> {
    let code = reason(code, packet)?;
    let allowed = match sender {
        Sender::Client => code.sent_by_client(packet),
        Sender::Server => code.sent_by_server(packet),
    };
    if allowed {
        Ok(code)
    } else {
        Err(DecodeError::ReasonCodeFromWrongSide { packet, code })
    }
}

fn topic_name(topic: &str) -> Result<String, DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::Malformed("empty Topic Name [MQTT-4.7.3-1]"));
    }
    if !is_valid_topic_name(topic) {
        return Err(DecodeError::Malformed(
            "wildcard in a Topic Name [MQTT-3.3.2-2]",
        ));
    }
    Ok(topic.to_owned())
}

fn parse_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    // The name is looked at before the level: after a wrong name (or a wrong
    // length, which shifts every field), the next byte means nothing.
    let name = r.binary()?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return Err(DecodeError::NotMqtt);
    }
    let level = r.u8()?;
    let version = match ProtocolVersion::from_level(level) {
        Some(v) if name == b"MQTT" => v,
        // 3.1 ("MQIsdp", level 3) or a level we do not speak [MQTT-3.1.2-2].
        _ => return Err(DecodeError::UnsupportedProtocolVersion { level }),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed(
            "CONNECT reserved flag is set [MQTT-3.1.2-3]",
        ));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    let will_qos =
        QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("Will QoS 3 [MQTT-3.1.2-12]"))?;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "Will QoS or Will Retain set without a will [MQTT-3.1.2-11], [MQTT-3.1.2-13]",
        ));
    }
    if version == ProtocolVersion::V311 && password_flag && !username_flag {
        return Err(DecodeError::Malformed(
            "password without a user name in 3.1.1 [MQTT-3.1.2-22]",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = match version {
        ProtocolVersion::V5 => ConnectProperties::decode(r)?,
        ProtocolVersion::V311 => ConnectProperties::default(),
    };
    let client_id = r.name()?.to_owned();
    let will = if will_flag {
        let properties = match version {
            ProtocolVersion::V5 => WillProperties::decode(r)?,
            ProtocolVersion::V311 => WillProperties::default(),
        };
        let topic = topic_name(r.name()?)?;
        let payload = Bytes::copy_from_slice(r.binary()?);
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    // [MQTT-3.1.2-16..19]: a flag without its field runs out of bytes, a
    // field without its flag is left over; both are Malformed Packets.
    let username = if username_flag {
        Some(r.name()?.to_owned())
    } else {
        None
    };
    let password = if password_flag {
        Some(Bytes::copy_from_slice(r.binary()?))
    } else {
        None
    };
    Ok(Connect {
        protocol: version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn parse_connack(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed(
            "CONNACK reserved flags are set [MQTT-3.2.2-1]",
        ));
    }
    let code = r.u8()?;
    let (reason_code, properties) = match v {
        ProtocolVersion::V311 => (
            ReasonCode::from_v311_connack(code).ok_or(DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code,
            })?,
            ConnAckProperties::default(),
        ),
        ProtocolVersion::V5 => (
            reason(code, PacketType::ConnAck)?,
            ConnAckProperties::decode(r)?,
        ),
    };
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason_code,
        properties,
    })
}

fn parse_publish(
    r: &mut Reader<'_>,
    flags: u8,
    v: ProtocolVersion,
    sender: Sender,
    payload: &mut Option<Range<usize>>,
) -> Result<Publish, DecodeError> {
    // Flags were checked with the first byte: QoS is 0, 1 or 2.
    let qos = QoS::from_u8((flags >> 1) & 0x03)
        .ok_or(DecodeError::Malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]"))?;
    let topic = r.name()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(packet_id(r)?),
    };
    let properties = match v {
        ProtocolVersion::V5 => PublishProperties::decode(r)?,
        ProtocolVersion::V311 => PublishProperties::default(),
    };
    let topic = if topic.is_empty() && v == ProtocolVersion::V5 {
        if properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol(
                "empty Topic Name without a Topic Alias [MQTT-3.3.2-1]",
            ));
        }
        String::new()
    } else {
        topic_name(topic)?
    };
    if sender == Sender::Client && !properties.subscription_identifiers.is_empty() {
        return Err(DecodeError::Protocol(
            "Subscription Identifier in a PUBLISH from a client [MQTT-3.3.4-6]",
        ));
    }
    let start = r.consumed();
    let rest = r.take_rest();
    *payload = Some(start..start + rest.len());
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        payload: Bytes::new(),
        properties,
    })
}

fn parse_ack(r: &mut Reader<'_>, v: ProtocolVersion, kind: PacketType) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = Ack::new(packet_id);
    // MQTT 5: the reason code and properties may be left out (§3.4.2.1).
    if v == ProtocolVersion::V5 && !r.is_empty() {
        ack.reason_code = reason(r.u8()?, kind)?;
        if !r.is_empty() {
            ack.properties = AckProperties::decode(r)?;
        }
    }
    Ok(ack)
}

fn parse_subscribe(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match v {
        ProtocolVersion::V5 => SubscribeProperties::decode(r)?,
        ProtocolVersion::V311 => SubscribeProperties::default(),
    };
    let mut subscriptions = Vec::new();
    while !r.is_empty() {
        let filter = r.name()?;
        let options = subscription_options(r.u8()?, v)?;
        if options.no_local && filter.starts_with("$share/") {
            return Err(DecodeError::Protocol(
                "No Local on a shared subscription [MQTT-3.8.3-4]",
            ));
        }
        subscriptions.push(Subscription {
            filter: filter.to_owned(),
            options,
        });
    }
    if subscriptions.is_empty() {
        // [MQTT-3.8.3-2] in 5 ("a Protocol Error"), [MQTT-3.8.3-3] in 3.1.1.
        return Err(DecodeError::Protocol(
            "SUBSCRIBE without a topic filter [MQTT-3.8.3-2], [MQTT-3.8.3-3]",
        ));
    }
    Ok(Subscribe {
        packet_id,
        subscriptions,
        properties,
    })
}

fn subscription_options(byte: u8, v: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    let qos = QoS::from_u8(byte & 0x03);
    match v {
        ProtocolVersion::V311 => {
            if byte & 0xFC != 0 {
                return Err(DecodeError::Malformed(
                    "reserved bits set in SUBSCRIBE [MQTT-3.8.3-4]",
                ));
            }
            let qos = qos.ok_or(DecodeError::Malformed(
                "requested QoS 3 in SUBSCRIBE [MQTT-3.8.3-4]",
            ))?;
            Ok(SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            })
        }
        ProtocolVersion::V5 => {
            if byte & 0xC0 != 0 {
                return Err(DecodeError::Malformed(
                    "reserved bits set in subscription options [MQTT-3.8.3-5]",
                ));
            }
            let qos = qos.ok_or(DecodeError::Protocol(
                "Maximum QoS 3 in subscription options",
            ))?;
            let retain_handling = match (byte >> 4) & 0x03 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNewSubscription,
                2 => RetainHandling::DoNotSend,
                _ => {
                    return Err(DecodeError::Protocol(
                        "Retain Handling 3 in subscription options",
                    ));
                }
            };
            Ok(SubscriptionOptions {
                qos,
                no_local: byte & 0x04 != 0,
                retain_as_published: byte & 0x08 != 0,
                retain_handling,
            })
        }
    }
}

fn parse_suback(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match v {
        ProtocolVersion::V5 => AckProperties::decode(r)?,
        ProtocolVersion::V311 => AckProperties::default(),
    };
    let mut reason_codes = Vec::new();
    while !r.is_empty() {
        let code = r.u8()?;
        reason_codes.push(match v {
            ProtocolVersion::V311 => {
                ReasonCode::from_v311_suback(code).ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code,
                })?
            }
            ProtocolVersion::V5 => reason(code, PacketType::SubAck)?,
        });
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without a reason code"));
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn parse_unsubscribe(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match v {
        ProtocolVersion::V5 => UnsubscribeProperties::decode(r)?,
        ProtocolVersion::V311 => UnsubscribeProperties::default(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.name()?.to_owned());
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2] in both versions.
        return Err(DecodeError::Protocol(
            "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn parse_unsuback(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = UnsubAck {
        packet_id,
        reason_codes: Vec::new(),
        properties: AckProperties::default(),
    };
    if v == ProtocolVersion::V5 {
        ack.properties = AckProperties::decode(r)?;
        while !r.is_empty() {
            ack.reason_codes
                .push(reason(r.u8()?, PacketType::UnsubAck)?);
        }
        if ack.reason_codes.is_empty() {
            return Err(DecodeError::Protocol("UNSUBACK without a reason code"));
        }
    }
    Ok(ack)
}

fn parse_disconnect(
    r: &mut Reader<'_>,
    v: ProtocolVersion,
    sender: Sender,
) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    // MQTT 5: both may be left out (§3.14.2.1); 3.1.1 has neither, so any
    // byte after its fixed header is left over (a Malformed Packet).
    if v == ProtocolVersion::V5 && !r.is_empty() {
        disconnect.reason_code = reason_from(r.u8()?, PacketType::Disconnect, sender)?;
        if !r.is_empty() {
            disconnect.properties = DisconnectProperties::decode(r)?;
        }
    }
    if sender == Sender::Server && disconnect.properties.session_expiry_interval.is_some() {
        // Valid in DISCONNECT, but not from this side, as a client's
        // Subscription Identifier in PUBLISH is.
        return Err(DecodeError::Protocol(
            "Session Expiry Interval in a DISCONNECT from the server [MQTT-3.14.2-2]",
        ));
    }
    Ok(disconnect)
}

fn parse_auth(r: &mut Reader<'_>, sender: Sender) -> Result<Auth, DecodeError> {
    // A Remaining Length of 0 means Success (§3.15.2.1), which only a server
    // sends: the side is checked for the code left out as well.
    let code = if r.is_empty() {
        ReasonCode::Success.as_u8()
    } else {
        r.u8()?
    };
    let mut auth = Auth {
        reason_code: reason_from(code, PacketType::Auth, sender)?,
        properties: AuthProperties::default(),
    };
    if !r.is_empty() {
        auth.properties = AuthProperties::decode(r)?;
    }
    Ok(auth)
}

// ------------------------------------------------------------------ encode

/// Appends `packet` to `out` in the wire format of `version`.
///
/// For 3.1.1, properties are left out, and reason codes become what 3.1.1
/// can say: CONNACK return codes 0–5 ([`ReasonCode::to_v311_connack`]),
/// SUBACK 0x00/0x01/0x02/0x80, nothing in PUBACK, PUBREC, PUBREL, PUBCOMP,
/// UNSUBACK and DISCONNECT. AUTH cannot be encoded for 3.1.1.
///
/// Refuses what a decoder would refuse, so that what is encoded decodes to
/// the same packet. On error nothing is appended.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let remaining = body_len(packet, version)?;
    out.reserve(1 + varint_len(remaining) + remaining);
    out.put_u8(first_byte(packet));
    put_varint(out, remaining)?;
    emit_body(packet, version, out)
}

/// The number of bytes [`encode`] would write, fixed header included: what
/// to compare with a client's Maximum Packet Size.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let remaining = body_len(packet, version)?;
    Ok(1 + varint_len(remaining) + remaining)
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    emit_body(packet, version, &mut counter)?;
    if counter.0 > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(counter.0));
    }
    Ok(counter.0)
}

fn first_byte(packet: &Packet) -> u8 {
    let kind = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain),
        _ => kind.required_flags(),
    };
    ((kind as u8) << 4) | flags
}

fn emit_body<S: Sink>(packet: &Packet, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => emit_connect(c, v, s),
        Packet::ConnAck(c) => emit_connack(c, v, s),
        Packet::Publish(p) => emit_publish(p, v, s),
        Packet::PubAck(a) => emit_ack(a, PacketType::PubAck, v, s),
        Packet::PubRec(a) => emit_ack(a, PacketType::PubRec, v, s),
        Packet::PubRel(a) => emit_ack(a, PacketType::PubRel, v, s),
        Packet::PubComp(a) => emit_ack(a, PacketType::PubComp, v, s),
        Packet::Subscribe(sub) => emit_subscribe(sub, v, s),
        Packet::SubAck(a) => emit_suback(a, v, s),
        Packet::Unsubscribe(u) => emit_unsubscribe(u, v, s),
        Packet::UnsubAck(a) => emit_unsuback(a, v, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => emit_disconnect(d, v, s),
        Packet::Auth(a) => emit_auth(a, v, s),
    }
}

fn check_reason(code: ReasonCode, packet: PacketType) -> Result<u8, EncodeError> {
    if code.is_valid_for(packet) {
        Ok(code.as_u8())
    } else {
        Err(EncodeError::InvalidReasonCode { packet, code })
    }
}

fn emit_connect<S: Sink>(c: &Connect, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    if c.protocol != v {
        return Err(EncodeError::Invalid(
            "CONNECT's protocol differs from the version it is encoded with",
        ));
    }
    if v == ProtocolVersion::V311 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid(
            "MQTT 3.1.1 sends a password only with a user name [MQTT-3.1.2-22]",
        ));
    }
    put_string(s, "MQTT")?;
    s.put_u8(v.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | (will.qos.as_u8() << 3) | (u8::from(will.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if v == ProtocolVersion::V5 {
        put_prefixed(s, &c.properties)?;
    }
    put_name(s, &c.client_id)?;
    if let Some(will) = &c.will {
        if v == ProtocolVersion::V5 {
            put_prefixed(s, &will.properties)?;
        }
        if !is_valid_topic_name(&will.topic) {
            return Err(EncodeError::Invalid(
                "the will topic must be a valid Topic Name",
            ));
        }
        put_name(s, &will.topic)?;
        put_binary(s, &will.payload)?;
    }
    if let Some(username) = &c.username {
        put_name(s, username)?;
    }
    if let Some(password) = &c.password {
        put_binary(s, password)?;
    }
    Ok(())
}

fn emit_connack<S: Sink>(c: &ConnAck, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    s.put_u8(u8::from(c.session_present));
    match v {
        ProtocolVersion::V311 => {
            let code = c
                .reason_code
                .to_v311_connack()
                .ok_or(EncodeError::NoV311Equivalent(c.reason_code))?;
            s.put_u8(code);
        }
        ProtocolVersion::V5 => {
            s.put_u8(check_reason(c.reason_code, PacketType::ConnAck)?);
            put_prefixed(s, &c.properties)?;
        }
    }
    Ok(())
}

fn emit_publish<S: Sink>(p: &Publish, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(EncodeError::Invalid(
            "DUP must be 0 on QoS 0 [MQTT-3.3.1-2]",
        ));
    }
    let alias_only =
        p.topic.is_empty() && v == ProtocolVersion::V5 && p.properties.topic_alias.is_some();
    if !alias_only && !is_valid_topic_name(&p.topic) {
        return Err(EncodeError::Invalid(
            "a Topic Name must not be empty (without a Topic Alias) or hold wildcards",
        ));
    }
    put_name(s, &p.topic)?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::Invalid(
                "a QoS 0 PUBLISH has no packet identifier [MQTT-2.2.1-2]",
            ));
        }
        (_, Some(id)) => s.put_u16(id.get()),
        (_, None) => {
            return Err(EncodeError::Invalid(
                "a QoS 1 or 2 PUBLISH needs a packet identifier [MQTT-2.2.1-3]",
            ));
        }
    }
    if v == ProtocolVersion::V5 {
        put_prefixed(s, &p.properties)?;
    }
    s.put(&p.payload);
    Ok(())
}

fn emit_ack<S: Sink>(
    a: &Ack,
    kind: PacketType,
    v: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    s.put_u16(a.packet_id.get());
    if v == ProtocolVersion::V5 {
        let code = check_reason(a.reason_code, kind)?;
        let has_properties = !a.properties.is_empty();
        if code != 0 || has_properties {
            s.put_u8(code);
        }
        if has_properties {
            put_prefixed(s, &a.properties)?;
        }
    }
    Ok(())
}

fn emit_subscribe<S: Sink>(
    sub: &Subscribe,
    v: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    s.put_u16(sub.packet_id.get());
    if v == ProtocolVersion::V5 {
        put_prefixed(s, &sub.properties)?;
    }
    if sub.subscriptions.is_empty() {
        return Err(EncodeError::Invalid(
            "SUBSCRIBE needs at least one topic filter",
        ));
    }
    for Subscription { filter, options } in &sub.subscriptions {
        put_name(s, filter)?;
        let byte = match v {
            ProtocolVersion::V311 => options.qos.as_u8(),
            ProtocolVersion::V5 => {
                if options.no_local && filter.starts_with("$share/") {
                    return Err(EncodeError::Invalid(
                        "No Local cannot be set on a shared subscription [MQTT-3.8.3-4]",
                    ));
                }
                options.qos.as_u8()
                    | (u8::from(options.no_local) << 2)
                    | (u8::from(options.retain_as_published) << 3)
                    | ((options.retain_handling as u8) << 4)
            }
        };
        s.put_u8(byte);
    }
    Ok(())
}

fn emit_suback<S: Sink>(a: &SubAck, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    s.put_u16(a.packet_id.get());
    if v == ProtocolVersion::V5 {
        put_prefixed(s, &a.properties)?;
    }
    if a.reason_codes.is_empty() {
        return Err(EncodeError::Invalid(
            "SUBACK needs at least one reason code",
        ));
    }
    for &code in &a.reason_codes {
        let byte = match v {
            ProtocolVersion::V311 => {
                code.to_v311_suback()
                    .ok_or(EncodeError::InvalidReasonCode {
                        packet: PacketType::SubAck,
                        code,
                    })?
            }
            ProtocolVersion::V5 => check_reason(code, PacketType::SubAck)?,
        };
        s.put_u8(byte);
    }
    Ok(())
}

fn emit_unsubscribe<S: Sink>(
    u: &Unsubscribe,
    v: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    s.put_u16(u.packet_id.get());
    if v == ProtocolVersion::V5 {
        put_prefixed(s, &u.properties)?;
    }
    if u.filters.is_empty() {
        return Err(EncodeError::Invalid(
            "UNSUBSCRIBE needs at least one topic filter",
        ));
    }
    for filter in &u.filters {
        put_name(s, filter)?;
    }
    Ok(())
}

fn emit_unsuback<S: Sink>(a: &UnsubAck, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    s.put_u16(a.packet_id.get());
    if v == ProtocolVersion::V5 {
        put_prefixed(s, &a.properties)?;
        if a.reason_codes.is_empty() {
            return Err(EncodeError::Invalid(
                "UNSUBACK needs at least one reason code",
            ));
        }
        for &code in &a.reason_codes {
            s.put_u8(check_reason(code, PacketType::UnsubAck)?);
        }
    }
    Ok(())
}

fn emit_disconnect<S: Sink>(
    d: &Disconnect,
    v: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if v == ProtocolVersion::V5 {
        let code = check_reason(d.reason_code, PacketType::Disconnect)?;
        let has_properties = !d.properties.is_empty();
        if code != 0 || has_properties {
            s.put_u8(code);
        }
        if has_properties {
            put_prefixed(s, &d.properties)?;
        }
    }
    Ok(())
}

fn emit_auth<S: Sink>(a: &Auth, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    if v == ProtocolVersion::V311 {
        return Err(EncodeError::Invalid("AUTH does not exist in MQTT 3.1.1"));
    }
    let code = check_reason(a.reason_code, PacketType::Auth)?;
    let has_properties = !a.properties.is_empty();
    if code != 0 || has_properties {
        s.put_u8(code);
    }
    if has_properties {
        put_prefixed(s, &a.properties)?;
    }
    Ok(())
}

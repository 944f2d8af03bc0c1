//! MQTT 5 properties (§2.2.2), one typed struct per packet that carries them,
//! so a property a packet cannot carry cannot be built.
//!
//! Decoding refuses, with the reason code the specification names:
//! - an identifier that is unknown or not allowed in the packet: Malformed
//!   Packet (§2.2.2.2; see [`not_allowed`], the one place that decides it);
//! - a property that may appear once appearing twice: Protocol Error;
//! - a value the specification rules out (a Receive Maximum, Maximum Packet Size,
//!   Topic Alias or Subscription Identifier of 0, a flag other than 0/1, a
//!   Maximum QoS of 2, a Response Topic that is not a valid Topic Name,
//!   Authentication Data without an Authentication Method): Protocol Error;
//! - a Response Topic or Assigned Client Identifier holding a control
//!   character or non-character: Malformed Packet, as for every name (`wire`).
//!
//! User properties keep their order and may repeat; so may Subscription
//! Identifiers in PUBLISH.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use super::codec::{DecodeError, EncodeError, QoS};
use super::wire::{
    Emit, Reader, Sink, TRUNCATED, check_name, is_valid_topic_name, put_binary, put_name,
    put_string, put_varint,
};

/// User properties: name/value pairs, in order, names may repeat.
pub type UserProperties = Vec<(String, String)>;

/// Property identifiers (§2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// The data type of a property's value (§1.5).
#[derive(Clone, Copy)]
enum Kind {
    Byte,
    TwoByte,
    FourByte,
    Varint,
    Str,
    Bin,
    Pair,
}

impl PropertyId {
    /// Every property identifier the specification defines.
    pub const ALL: [Self; 27] = [
        Self::PayloadFormatIndicator,
        Self::MessageExpiryInterval,
        Self::ContentType,
        Self::ResponseTopic,
        Self::CorrelationData,
        Self::SubscriptionIdentifier,
        Self::SessionExpiryInterval,
        Self::AssignedClientIdentifier,
        Self::ServerKeepAlive,
        Self::AuthenticationMethod,
        Self::AuthenticationData,
        Self::RequestProblemInformation,
        Self::WillDelayInterval,
        Self::RequestResponseInformation,
        Self::ResponseInformation,
        Self::ServerReference,
        Self::ReasonString,
        Self::ReceiveMaximum,
        Self::TopicAliasMaximum,
        Self::TopicAlias,
        Self::MaximumQoS,
        Self::RetainAvailable,
        Self::UserProperty,
        Self::MaximumPacketSize,
        Self::WildcardSubscriptionAvailable,
        Self::SubscriptionIdentifierAvailable,
        Self::SharedSubscriptionAvailable,
    ];

    pub fn from_u8(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_u8() == id)
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    fn kind(self) -> Kind {
        use PropertyId as I;
        match self {
            I::PayloadFormatIndicator
            | I::RequestProblemInformation
            | I::RequestResponseInformation
            | I::MaximumQoS
            | I::RetainAvailable
            | I::WildcardSubscriptionAvailable
            | I::SubscriptionIdentifierAvailable
            | I::SharedSubscriptionAvailable => Kind::Byte,
            I::ServerKeepAlive | I::ReceiveMaximum | I::TopicAliasMaximum | I::TopicAlias => {
                Kind::TwoByte
            }
            I::MessageExpiryInterval
            | I::SessionExpiryInterval
            | I::WillDelayInterval
            | I::MaximumPacketSize => Kind::FourByte,
            I::SubscriptionIdentifier => Kind::Varint,
            I::ContentType
            | I::ResponseTopic
            | I::AssignedClientIdentifier
            | I::AuthenticationMethod
            | I::ResponseInformation
            | I::ServerReference
            | I::ReasonString => Kind::Str,
            I::CorrelationData | I::AuthenticationData => Kind::Bin,
            I::UserProperty => Kind::Pair,
        }
    }
}

/// The Payload Format Indicator's two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    Unspecified,
    /// 1: UTF-8 encoded character data.
    Utf8,
}

/// Properties of CONNECT (§3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<NonZeroU16>,
    pub maximum_packet_size: Option<NonZeroU32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<bool>,
    pub request_problem_information: Option<bool>,
    pub user_properties: UserProperties,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
}

/// Will properties in the CONNECT payload (§3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    pub will_delay_interval: Option<u32>,
    pub payload_format_indicator: Option<PayloadFormat>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
}

/// Properties of CONNACK (§3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<NonZeroU16>,
    /// Only QoS 0 or 1; absent means QoS 2 is supported.
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<NonZeroU32>,
    pub assigned_client_identifier: Option<String>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
}

/// Properties of PUBLISH (§3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    pub payload_format_indicator: Option<PayloadFormat>,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<NonZeroU16>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
    /// One per matching subscription, server to client only [MQTT-3.3.4-6].
    pub subscription_identifiers: Vec<NonZeroU32>,
    pub content_type: Option<String>,
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}

/// Properties of SUBSCRIBE (§3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    pub subscription_identifier: Option<NonZeroU32>,
    pub user_properties: UserProperties,
}

/// Properties of UNSUBSCRIBE (§3.10.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    pub user_properties: UserProperties,
}

/// Properties of DISCONNECT (§3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
    pub server_reference: Option<String>,
}

/// Properties of AUTH (§3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}

impl WillProperties {
    /// The properties a PUBLISH of this will message carries (§3.1.3.2): all
    /// but the Will Delay Interval.
    pub fn to_publish_properties(&self) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            topic_alias: None,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            subscription_identifiers: Vec::new(),
            content_type: self.content_type.clone(),
        }
    }
}

// ---------------------------------------------------------------- decoding

/// One property as read, borrowing from the packet.
enum Value<'a> {
    Byte(u8),
    TwoByte(u16),
    FourByte(u32),
    Varint(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

/// Reads a property list (its length, then the properties) and hands each
/// property to `f`.
fn read_properties<'a>(
    r: &mut Reader<'a>,
    mut f: impl FnMut(PropertyId, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.varint()?;
    let mut props = r.sub(usize::try_from(len).map_err(|_| TRUNCATED)?)?;
    while !props.is_empty() {
        // The identifier is a variable byte integer, but every identifier
        // defined is below 0x80: a continuation bit means an unknown one.
        let id = PropertyId::from_u8(props.u8()?).ok_or(DecodeError::Malformed(
            "unknown property identifier [MQTT-2.2.2-2]",
        ))?;
        let value = match id.kind() {
            Kind::Byte => Value::Byte(props.u8()?),
            Kind::TwoByte => Value::TwoByte(props.u16()?),
            Kind::FourByte => Value::FourByte(props.u32()?),
            Kind::Varint => Value::Varint(props.varint()?),
            Kind::Str => Value::Str(props.string()?),
            Kind::Bin => Value::Bin(props.binary()?),
            Kind::Pair => {
                let name = props.string()?;
                Value::Pair(name, props.string()?)
            }
        };
        f(id, value)?;
    }
    Ok(())
}

/// The refusal of a property identifier that the packet at hand may not carry
/// (Table 2-4 says which packets carry which property; each `decode` below
/// matches exactly its packet's column and sends everything else here).
///
/// It is a Malformed Packet (0x81), not a Protocol Error (0x82): §2.2.2.2
/// says "A Control Packet which contains an Identifier which is not valid for
/// its packet type, or contains a value not of the specified data type, is a
/// Malformed Packet", and §4.13.1 has the receiver close with that code. The
/// Protocol Errors among properties are the ones the packet's own section
/// names: a property repeated ("It is a Protocol Error to include ... more
/// than once"), a value ruled out, and a property valid for the packet type
/// but not from this side (a client's Subscription Identifier in PUBLISH,
/// [MQTT-3.3.4-6], refused in `codec`).
fn not_allowed(id: PropertyId) -> DecodeError {
    DecodeError::PropertyNotAllowed(id)
}

fn once<T>(slot: &mut Option<T>, id: PropertyId, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

fn flag(id: PropertyId, value: u8) -> Result<bool, DecodeError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

fn nonzero16(id: PropertyId, value: u16) -> Result<NonZeroU16, DecodeError> {
    NonZeroU16::new(value).ok_or(DecodeError::InvalidPropertyValue(id))
}

fn nonzero32(id: PropertyId, value: u32) -> Result<NonZeroU32, DecodeError> {
    NonZeroU32::new(value).ok_or(DecodeError::InvalidPropertyValue(id))
}

fn payload_format(id: PropertyId, value: u8) -> Result<PayloadFormat, DecodeError> {
    Ok(if flag(id, value)? {
        PayloadFormat::Utf8
    } else {
        PayloadFormat::Unspecified
    })
}

fn response_topic(id: PropertyId, value: &str) -> Result<String, DecodeError> {
    // A Topic Name, so no wildcards [MQTT-3.3.2-14] and not empty [MQTT-4.7.3-1],
    // and a name: no control characters or non-characters.
    check_name(value)?;
    if is_valid_topic_name(value) {
        Ok(value.to_owned())
    } else {
        Err(DecodeError::InvalidPropertyValue(id))
    }
}

fn user(list: &mut UserProperties, name: &str, value: &str) -> Result<(), DecodeError> {
    list.push((name.to_owned(), value.to_owned()));
    Ok(())
}

fn bytes(value: &[u8]) -> Bytes {
    Bytes::copy_from_slice(value)
}

/// "It is a Protocol Error to include Authentication Data if there is no
/// Authentication Method" (§3.1.2.11.10, §3.2.2.3.18, §3.15.2.2.3).
fn check_auth(method: &Option<String>, data: &Option<Bytes>) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        return Err(DecodeError::InvalidPropertyValue(
            PropertyId::AuthenticationData,
        ));
    }
    Ok(())
}

use PropertyId as I;
use Value as V;

impl ConnectProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::SessionExpiryInterval, V::FourByte(x)) => {
                once(&mut p.session_expiry_interval, id, x)
            }
            (I::ReceiveMaximum, V::TwoByte(x)) => {
                once(&mut p.receive_maximum, id, nonzero16(id, x)?)
            }
            (I::MaximumPacketSize, V::FourByte(x)) => {
                once(&mut p.maximum_packet_size, id, nonzero32(id, x)?)
            }
            (I::TopicAliasMaximum, V::TwoByte(x)) => once(&mut p.topic_alias_maximum, id, x),
            (I::RequestResponseInformation, V::Byte(x)) => {
                once(&mut p.request_response_information, id, flag(id, x)?)
            }
            (I::RequestProblemInformation, V::Byte(x)) => {
                once(&mut p.request_problem_information, id, flag(id, x)?)
            }
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            (I::AuthenticationMethod, V::Str(s)) => {
                once(&mut p.authentication_method, id, s.to_owned())
            }
            (I::AuthenticationData, V::Bin(b)) => once(&mut p.authentication_data, id, bytes(b)),
            _ => Err(not_allowed(id)),
        })?;
        check_auth(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}

impl WillProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::WillDelayInterval, V::FourByte(x)) => once(&mut p.will_delay_interval, id, x),
            (I::PayloadFormatIndicator, V::Byte(x)) => {
                once(&mut p.payload_format_indicator, id, payload_format(id, x)?)
            }
            (I::MessageExpiryInterval, V::FourByte(x)) => {
                once(&mut p.message_expiry_interval, id, x)
            }
            (I::ContentType, V::Str(s)) => once(&mut p.content_type, id, s.to_owned()),
            (I::ResponseTopic, V::Str(s)) => {
                once(&mut p.response_topic, id, response_topic(id, s)?)
            }
            (I::CorrelationData, V::Bin(b)) => once(&mut p.correlation_data, id, bytes(b)),
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            _ => Err(not_allowed(id)),
        })?;
        Ok(p)
    }
}

impl ConnAckProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::SessionExpiryInterval, V::FourByte(x)) => {
                once(&mut p.session_expiry_interval, id, x)
            }
            (I::ReceiveMaximum, V::TwoByte(x)) => {
                once(&mut p.receive_maximum, id, nonzero16(id, x)?)
            }
            (I::MaximumQoS, V::Byte(x)) => {
                let qos = match x {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidPropertyValue(id)),
                };
                once(&mut p.maximum_qos, id, qos)
            }
            (I::RetainAvailable, V::Byte(x)) => once(&mut p.retain_available, id, flag(id, x)?),
            (I::MaximumPacketSize, V::FourByte(x)) => {
                once(&mut p.maximum_packet_size, id, nonzero32(id, x)?)
            }
            (I::AssignedClientIdentifier, V::Str(s)) => {
                check_name(s)?;
                once(&mut p.assigned_client_identifier, id, s.to_owned())
            }
            (I::TopicAliasMaximum, V::TwoByte(x)) => once(&mut p.topic_alias_maximum, id, x),
            (I::ReasonString, V::Str(s)) => once(&mut p.reason_string, id, s.to_owned()),
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            (I::WildcardSubscriptionAvailable, V::Byte(x)) => {
                once(&mut p.wildcard_subscription_available, id, flag(id, x)?)
            }
            (I::SubscriptionIdentifierAvailable, V::Byte(x)) => {
                once(&mut p.subscription_identifiers_available, id, flag(id, x)?)
            }
            (I::SharedSubscriptionAvailable, V::Byte(x)) => {
                once(&mut p.shared_subscription_available, id, flag(id, x)?)
            }
            (I::ServerKeepAlive, V::TwoByte(x)) => once(&mut p.server_keep_alive, id, x),
            (I::ResponseInformation, V::Str(s)) => {
                once(&mut p.response_information, id, s.to_owned())
            }
            (I::ServerReference, V::Str(s)) => once(&mut p.server_reference, id, s.to_owned()),
            (I::AuthenticationMethod, V::Str(s)) => {
                once(&mut p.authentication_method, id, s.to_owned())
            }
            (I::AuthenticationData, V::Bin(b)) => once(&mut p.authentication_data, id, bytes(b)),
            _ => Err(not_allowed(id)),
        })?;
        check_auth(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}

impl PublishProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::PayloadFormatIndicator, V::Byte(x)) => {
                once(&mut p.payload_format_indicator, id, payload_format(id, x)?)
            }
            (I::MessageExpiryInterval, V::FourByte(x)) => {
                once(&mut p.message_expiry_interval, id, x)
            }
            (I::TopicAlias, V::TwoByte(x)) => {
                // "A Topic Alias of 0 is not permitted" [MQTT-3.3.2-8].
                once(&mut p.topic_alias, id, nonzero16(id, x)?)
            }
            (I::ResponseTopic, V::Str(s)) => {
                once(&mut p.response_topic, id, response_topic(id, s)?)
            }
            (I::CorrelationData, V::Bin(b)) => once(&mut p.correlation_data, id, bytes(b)),
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            (I::SubscriptionIdentifier, V::Varint(x)) => {
                p.subscription_identifiers.push(nonzero32(id, x)?);
                Ok(())
            }
            (I::ContentType, V::Str(s)) => once(&mut p.content_type, id, s.to_owned()),
            _ => Err(not_allowed(id)),
        })?;
        Ok(p)
    }
}

impl AckProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::ReasonString, V::Str(s)) => once(&mut p.reason_string, id, s.to_owned()),
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            _ => Err(not_allowed(id)),
        })?;
        Ok(p)
    }

    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl SubscribeProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::SubscriptionIdentifier, V::Varint(x)) => {
                once(&mut p.subscription_identifier, id, nonzero32(id, x)?)
            }
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            _ => Err(not_allowed(id)),
        })?;
        Ok(p)
    }
}

impl UnsubscribeProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            _ => Err(not_allowed(id)),
        })?;
        Ok(p)
    }
}

impl DisconnectProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::SessionExpiryInterval, V::FourByte(x)) => {
                once(&mut p.session_expiry_interval, id, x)
            }
            (I::ReasonString, V::Str(s)) => once(&mut p.reason_string, id, s.to_owned()),
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            (I::ServerReference, V::Str(s)) => once(&mut p.server_reference, id, s.to_owned()),
            _ => Err(not_allowed(id)),
        })?;
        Ok(p)
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl AuthProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (I::AuthenticationMethod, V::Str(s)) => {
                once(&mut p.authentication_method, id, s.to_owned())
            }
            (I::AuthenticationData, V::Bin(b)) => once(&mut p.authentication_data, id, bytes(b)),
            (I::ReasonString, V::Str(s)) => once(&mut p.reason_string, id, s.to_owned()),
            (I::UserProperty, V::Pair(k, v)) => user(&mut p.user_properties, k, v),
            _ => Err(not_allowed(id)),
        })?;
        check_auth(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

// ---------------------------------------------------------------- encoding

fn w_byte<S: Sink>(s: &mut S, id: PropertyId, value: Option<u8>) {
    if let Some(v) = value {
        s.put_u8(id.as_u8());
        s.put_u8(v);
    }
}

fn w_flag<S: Sink>(s: &mut S, id: PropertyId, value: Option<bool>) {
    w_byte(s, id, value.map(u8::from));
}

fn w_format<S: Sink>(s: &mut S, value: Option<PayloadFormat>) {
    let byte = value.map(|f| match f {
        PayloadFormat::Unspecified => 0,
        PayloadFormat::Utf8 => 1,
    });
    w_byte(s, I::PayloadFormatIndicator, byte);
}

fn w_u16<S: Sink>(s: &mut S, id: PropertyId, value: Option<u16>) {
    if let Some(v) = value {
        s.put_u8(id.as_u8());
        s.put_u16(v);
    }
}

fn w_u32<S: Sink>(s: &mut S, id: PropertyId, value: Option<u32>) {
    if let Some(v) = value {
        s.put_u8(id.as_u8());
        s.put_u32(v);
    }
}

fn w_varint<S: Sink>(s: &mut S, id: PropertyId, value: NonZeroU32) -> Result<(), EncodeError> {
    s.put_u8(id.as_u8());
    let v = usize::try_from(value.get()).map_err(|_| EncodeError::VarintTooLarge(usize::MAX))?;
    put_varint(s, v)
}

fn w_str<S: Sink>(s: &mut S, id: PropertyId, value: Option<&str>) -> Result<(), EncodeError> {
    if let Some(v) = value {
        s.put_u8(id.as_u8());
        put_string(s, v)?;
    }
    Ok(())
}

fn w_name<S: Sink>(s: &mut S, id: PropertyId, value: Option<&str>) -> Result<(), EncodeError> {
    if let Some(v) = value {
        s.put_u8(id.as_u8());
        put_name(s, v)?;
    }
    Ok(())
}

fn w_topic<S: Sink>(s: &mut S, id: PropertyId, value: Option<&str>) -> Result<(), EncodeError> {
    if let Some(v) = value
        && !is_valid_topic_name(v)
    {
        return Err(EncodeError::Invalid(
            "a Response Topic must be a valid Topic Name [MQTT-3.3.2-14]",
        ));
    }
    w_name(s, id, value)
}

fn w_bin<S: Sink>(s: &mut S, id: PropertyId, value: Option<&Bytes>) -> Result<(), EncodeError> {
    if let Some(v) = value {
        s.put_u8(id.as_u8());
        put_binary(s, v)?;
    }
    Ok(())
}

fn w_users<S: Sink>(s: &mut S, list: &UserProperties) -> Result<(), EncodeError> {
    for (name, value) in list {
        s.put_u8(I::UserProperty.as_u8());
        put_string(s, name)?;
        put_string(s, value)?;
    }
    Ok(())
}

fn w_auth<S: Sink>(
    s: &mut S,
    method: &Option<String>,
    data: &Option<Bytes>,
) -> Result<(), EncodeError> {
    if data.is_some() && method.is_none() {
        return Err(EncodeError::Invalid(
            "Authentication Data needs an Authentication Method",
        ));
    }
    w_str(s, I::AuthenticationMethod, method.as_deref())?;
    w_bin(s, I::AuthenticationData, data.as_ref())
}

impl Emit for ConnectProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, I::SessionExpiryInterval, self.session_expiry_interval);
        w_u16(
            s,
            I::ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        w_u32(
            s,
            I::MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        w_u16(s, I::TopicAliasMaximum, self.topic_alias_maximum);
        w_flag(
            s,
            I::RequestResponseInformation,
            self.request_response_information,
        );
        w_flag(
            s,
            I::RequestProblemInformation,
            self.request_problem_information,
        );
        w_users(s, &self.user_properties)?;
        w_auth(s, &self.authentication_method, &self.authentication_data)
    }
}

impl Emit for WillProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, I::WillDelayInterval, self.will_delay_interval);
        w_format(s, self.payload_format_indicator);
        w_u32(s, I::MessageExpiryInterval, self.message_expiry_interval);
        w_str(s, I::ContentType, self.content_type.as_deref())?;
        w_topic(s, I::ResponseTopic, self.response_topic.as_deref())?;
        w_bin(s, I::CorrelationData, self.correlation_data.as_ref())?;
        w_users(s, &self.user_properties)
    }
}

impl Emit for ConnAckProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, I::SessionExpiryInterval, self.session_expiry_interval);
        w_u16(
            s,
            I::ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        let max_qos = match self.maximum_qos {
            None => None,
            Some(QoS::AtMostOnce) => Some(0),
            Some(QoS::AtLeastOnce) => Some(1),
            Some(QoS::ExactlyOnce) => {
                return Err(EncodeError::Invalid(
                    "Maximum QoS can only be 0 or 1; leave it out for 2",
                ));
            }
        };
        w_byte(s, I::MaximumQoS, max_qos);
        w_flag(s, I::RetainAvailable, self.retain_available);
        w_u32(
            s,
            I::MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        w_name(
            s,
            I::AssignedClientIdentifier,
            self.assigned_client_identifier.as_deref(),
        )?;
        w_u16(s, I::TopicAliasMaximum, self.topic_alias_maximum);
        w_str(s, I::ReasonString, self.reason_string.as_deref())?;
        w_users(s, &self.user_properties)?;
        w_flag(
            s,
            I::WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        w_flag(
            s,
            I::SubscriptionIdentifierAvailable,
            self.subscription_identifiers_available,
        );
        w_flag(
            s,
            I::SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
        w_u16(s, I::ServerKeepAlive, self.server_keep_alive);
        w_str(
            s,
            I::ResponseInformation,
            self.response_information.as_deref(),
        )?;
        w_str(s, I::ServerReference, self.server_reference.as_deref())?;
        w_auth(s, &self.authentication_method, &self.authentication_data)
    }
}

impl Emit for PublishProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_format(s, self.payload_format_indicator);
        w_u32(s, I::MessageExpiryInterval, self.message_expiry_interval);
        w_u16(s, I::TopicAlias, self.topic_alias.map(NonZeroU16::get));
        w_topic(s, I::ResponseTopic, self.response_topic.as_deref())?;
        w_bin(s, I::CorrelationData, self.correlation_data.as_ref())?;
        w_users(s, &self.user_properties)?;
        for &id in &self.subscription_identifiers {
            w_varint(s, I::SubscriptionIdentifier, id)?;
        }
        w_str(s, I::ContentType, self.content_type.as_deref())
    }
}

impl Emit for AckProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_str(s, I::ReasonString, self.reason_string.as_deref())?;
        w_users(s, &self.user_properties)
    }
}

impl Emit for SubscribeProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(id) = self.subscription_identifier {
            w_varint(s, I::SubscriptionIdentifier, id)?;
        }
        w_users(s, &self.user_properties)
    }
}

impl Emit for UnsubscribeProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_users(s, &self.user_properties)
    }
}

impl Emit for DisconnectProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, I::SessionExpiryInterval, self.session_expiry_interval);
        w_str(s, I::ReasonString, self.reason_string.as_deref())?;
        w_users(s, &self.user_properties)?;
        w_str(s, I::ServerReference, self.server_reference.as_deref())
    }
}

impl Emit for AuthProperties {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_auth(s, &self.authentication_method, &self.authentication_data)?;
        w_str(s, I::ReasonString, self.reason_string.as_deref())?;
        w_users(s, &self.user_properties)
    }
}

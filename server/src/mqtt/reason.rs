//! Reason codes (MQTT 5.0 §2.4) and how they map onto MQTT 3.1.1's CONNACK
//! return codes and SUBACK return codes.

use super::codec::{PacketType, QoS};

/// An MQTT 5 reason code. `0x00` has three names in the specification
/// (Success, Normal disconnection, Granted QoS 0); see the associated consts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReasonCode {
    Success = 0x00,
    GrantedQoS1 = 0x01,
    GrantedQoS2 = 0x02,
    DisconnectWithWillMessage = 0x04,
    NoMatchingSubscribers = 0x10,
    NoSubscriptionExisted = 0x11,
    ContinueAuthentication = 0x18,
    ReAuthenticate = 0x19,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecificError = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ServerBusy = 0x89,
    Banned = 0x8A,
    ServerShuttingDown = 0x8B,
    BadAuthenticationMethod = 0x8C,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91,
    PacketIdentifierNotFound = 0x92,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    MessageRateTooHigh = 0x96,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    RetainNotSupported = 0x9A,
    QoSNotSupported = 0x9B,
    UseAnotherServer = 0x9C,
    ServerMoved = 0x9D,
    SharedSubscriptionsNotSupported = 0x9E,
    ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0,
    SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NORMAL_DISCONNECTION: Self = Self::Success;
    /// 0x00 in SUBACK.
    pub const GRANTED_QOS_0: Self = Self::Success;

    /// Every reason code the specification defines.
    pub const ALL: [Self; 43] = [
        Self::Success,
        Self::GrantedQoS1,
        Self::GrantedQoS2,
        Self::DisconnectWithWillMessage,
        Self::NoMatchingSubscribers,
        Self::NoSubscriptionExisted,
        Self::ContinueAuthentication,
        Self::ReAuthenticate,
        Self::UnspecifiedError,
        Self::MalformedPacket,
        Self::ProtocolError,
        Self::ImplementationSpecificError,
        Self::UnsupportedProtocolVersion,
        Self::ClientIdentifierNotValid,
        Self::BadUserNameOrPassword,
        Self::NotAuthorized,
        Self::ServerUnavailable,
        Self::ServerBusy,
        Self::Banned,
        Self::ServerShuttingDown,
        Self::BadAuthenticationMethod,
        Self::KeepAliveTimeout,
        Self::SessionTakenOver,
        Self::TopicFilterInvalid,
        Self::TopicNameInvalid,
        Self::PacketIdentifierInUse,
        Self::PacketIdentifierNotFound,
        Self::ReceiveMaximumExceeded,
        Self::TopicAliasInvalid,
        Self::PacketTooLarge,
        Self::MessageRateTooHigh,
        Self::QuotaExceeded,
        Self::AdministrativeAction,
        Self::PayloadFormatInvalid,
        Self::RetainNotSupported,
        Self::QoSNotSupported,
        Self::UseAnotherServer,
        Self::ServerMoved,
        Self::SharedSubscriptionsNotSupported,
        Self::ConnectionRateExceeded,
        Self::MaximumConnectTime,
        Self::SubscriptionIdentifiersNotSupported,
        Self::WildcardSubscriptionsNotSupported,
    ];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_u8() == value)
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Reason codes of 0x80 and above report a failure.
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// The SUBACK code granting `qos`.
    pub fn granted(qos: QoS) -> Self {
        match qos {
            QoS::AtMostOnce => Self::GRANTED_QOS_0,
            QoS::AtLeastOnce => Self::GrantedQoS1,
            QoS::ExactlyOnce => Self::GrantedQoS2,
        }
    }

    /// Whether the specification allows this code in `packet` (§2.4, table 2-6).
    pub fn is_valid_for(self, packet: PacketType) -> bool {
        use PacketType as P;
        let pub_ack = matches!(packet, P::PubAck | P::PubRec);
        match self {
            Self::Success => matches!(
                packet,
                P::ConnAck
                    | P::PubAck
                    | P::PubRec
                    | P::PubRel
                    | P::PubComp
                    | P::SubAck
                    | P::UnsubAck
                    | P::Disconnect
                    | P::Auth
            ),
            Self::GrantedQoS1 | Self::GrantedQoS2 => packet == P::SubAck,
            Self::DisconnectWithWillMessage => packet == P::Disconnect,
            Self::NoMatchingSubscribers => pub_ack,
            Self::NoSubscriptionExisted => packet == P::UnsubAck,
            Self::ContinueAuthentication | Self::ReAuthenticate => packet == P::Auth,
            Self::UnspecifiedError | Self::ImplementationSpecificError | Self::NotAuthorized => {
                pub_ack || matches!(packet, P::ConnAck | P::SubAck | P::UnsubAck | P::Disconnect)
            }
            Self::MalformedPacket
            | Self::ProtocolError
            | Self::ServerBusy
            | Self::BadAuthenticationMethod
            | Self::PacketTooLarge
            | Self::RetainNotSupported
            | Self::QoSNotSupported
            | Self::UseAnotherServer
            | Self::ServerMoved
            | Self::ConnectionRateExceeded => matches!(packet, P::ConnAck | P::Disconnect),
            Self::UnsupportedProtocolVersion
            | Self::ClientIdentifierNotValid
            | Self::BadUserNameOrPassword
            | Self::ServerUnavailable
            | Self::Banned => packet == P::ConnAck,
            Self::ServerShuttingDown
            | Self::KeepAliveTimeout
            | Self::SessionTakenOver
            | Self::ReceiveMaximumExceeded
            | Self::TopicAliasInvalid
            | Self::MessageRateTooHigh
            | Self::AdministrativeAction
            | Self::MaximumConnectTime => packet == P::Disconnect,
            Self::TopicFilterInvalid => {
                matches!(packet, P::SubAck | P::UnsubAck | P::Disconnect)
            }
            Self::TopicNameInvalid | Self::PayloadFormatInvalid => {
                pub_ack || matches!(packet, P::ConnAck | P::Disconnect)
            }
            Self::PacketIdentifierInUse => pub_ack || matches!(packet, P::SubAck | P::UnsubAck),
            Self::PacketIdentifierNotFound => matches!(packet, P::PubRel | P::PubComp),
            Self::QuotaExceeded => {
                pub_ack || matches!(packet, P::ConnAck | P::SubAck | P::Disconnect)
            }
            Self::SharedSubscriptionsNotSupported
            | Self::SubscriptionIdentifiersNotSupported
            | Self::WildcardSubscriptionsNotSupported => {
                matches!(packet, P::SubAck | P::Disconnect)
            }
        }
    }

    /// Whether a client may send this code in `packet`. Only DISCONNECT and
    /// AUTH say who sends which code (the "Sent by" column of §3.14.2.1 and
    /// §3.15.2.1); in the other packets the side follows from the packet.
    /// In DISCONNECT the codes about the server's state, limits and choices
    /// are the server's alone; in AUTH, Success (the server accepting).
    pub fn sent_by_client(self, packet: PacketType) -> bool {
        match packet {
            PacketType::Disconnect => !matches!(
                self,
                Self::NotAuthorized
                    | Self::ServerBusy
                    | Self::ServerShuttingDown
                    | Self::BadAuthenticationMethod
                    | Self::KeepAliveTimeout
                    | Self::SessionTakenOver
                    | Self::TopicFilterInvalid
                    | Self::RetainNotSupported
                    | Self::QoSNotSupported
                    | Self::UseAnotherServer
                    | Self::ServerMoved
                    | Self::SharedSubscriptionsNotSupported
                    | Self::ConnectionRateExceeded
                    | Self::MaximumConnectTime
                    | Self::SubscriptionIdentifiersNotSupported
                    | Self::WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => self != Self::Success,
            _ => true,
        }
    }

    /// Whether a server may send this code in `packet` (see
    /// [`ReasonCode::sent_by_client`]): not DISCONNECT's "Disconnect with
    /// Will Message", not AUTH's "Re-authenticate".
    pub fn sent_by_server(self, packet: PacketType) -> bool {
        match packet {
            PacketType::Disconnect => self != Self::DisconnectWithWillMessage,
            PacketType::Auth => self != Self::ReAuthenticate,
            _ => true,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code (§3.2.2.3) closest to this code, if
    /// there is one. For the others 3.1.1 says to close the connection
    /// without a CONNACK [MQTT-3.2.2-6].
    pub fn to_v311_connack(self) -> Option<u8> {
        match self {
            Self::Success => Some(0),
            Self::UnsupportedProtocolVersion => Some(1),
            Self::ClientIdentifierNotValid => Some(2),
            Self::ServerUnavailable
            | Self::ServerBusy
            | Self::UseAnotherServer
            | Self::ServerMoved
            | Self::QuotaExceeded
            | Self::ConnectionRateExceeded => Some(3),
            Self::BadUserNameOrPassword | Self::BadAuthenticationMethod => Some(4),
            Self::NotAuthorized | Self::Banned => Some(5),
            _ => None,
        }
    }

    /// Reads an MQTT 3.1.1 CONNACK return code; 6..=255 are reserved.
    pub fn from_v311_connack(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Success),
            1 => Some(Self::UnsupportedProtocolVersion),
            2 => Some(Self::ClientIdentifierNotValid),
            3 => Some(Self::ServerUnavailable),
            4 => Some(Self::BadUserNameOrPassword),
            5 => Some(Self::NotAuthorized),
            _ => None,
        }
    }

    /// The MQTT 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any
    /// failure. `None` for codes SUBACK cannot carry.
    pub fn to_v311_suback(self) -> Option<u8> {
        match self {
            Self::Success => Some(0x00),
            Self::GrantedQoS1 => Some(0x01),
            Self::GrantedQoS2 => Some(0x02),
            c if c.is_error() && c.is_valid_for(PacketType::SubAck) => Some(0x80),
            _ => None,
        }
    }

    /// Reads an MQTT 3.1.1 SUBACK return code; only 0, 1, 2 and 0x80 exist
    /// [MQTT-3.9.3-2].
    pub fn from_v311_suback(code: u8) -> Option<Self> {
        match code {
            0x00 => Some(Self::Success),
            0x01 => Some(Self::GrantedQoS1),
            0x02 => Some(Self::GrantedQoS2),
            0x80 => Some(Self::UnspecifiedError),
            _ => None,
        }
    }
}

impl From<ReasonCode> for u8 {
    fn from(code: ReasonCode) -> u8 {
        code.as_u8()
    }
}

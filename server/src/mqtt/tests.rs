//! Codec tests: round trips, byte vectors, the normative statements the
//! decoder enforces (named after them), partial input, and a deterministic
//! fuzz loop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::*;

const MAX: usize = 1 << 20;

fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn nz32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn users() -> UserProperties {
    vec![
        (s("origin"), s("rest")),
        (s("seq"), s("42")),
        (s("origin"), s("again, repeated")),
        (s("empty"), s("")),
    ]
}

/// Encodes a fixed header + body by hand.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn bytes_of(packet: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, v, &mut out).unwrap();
    out.to_vec()
}

/// Whether the packet is read with the server-side decoder (`decode`) or
/// the client-side one (`decode_as_client`).
fn sent_by_server(packet: &Packet) -> bool {
    match packet {
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => true,
        Packet::Publish(p) => !p.properties.subscription_identifiers.is_empty(),
        // AUTH Success is the server accepting (§3.15.2.1).
        Packet::Auth(a) => a.reason_code == ReasonCode::Success,
        _ => false,
    }
}

/// Decodes as whichever side receives `packet`.
fn decode_for(
    packet: &Packet,
    buf: &mut BytesMut,
    v: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    if sent_by_server(packet) {
        decode_as_client(buf, v, MAX)
    } else if matches!(packet, Packet::Connect(_)) {
        decode(buf, None, MAX)
    } else {
        decode(buf, Some(v), MAX)
    }
}

fn decode_server(bytes: &[u8], v: Option<ProtocolVersion>) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), v, MAX)
}

fn decode_client(bytes: &[u8], v: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    decode_as_client(&mut BytesMut::from(bytes), v, MAX)
}

fn err_server(bytes: &[u8], v: Option<ProtocolVersion>) -> DecodeError {
    decode_server(bytes, v).unwrap_err()
}

fn assert_round_trip(packet: &Packet, v: ProtocolVersion) {
    let mut buf = BytesMut::new();
    encode(packet, v, &mut buf).unwrap_or_else(|e| panic!("encode {packet:?}: {e}"));
    assert_eq!(encoded_len(packet, v).unwrap(), buf.len(), "{packet:?}");
    let decoded = decode_for(packet, &mut buf, v)
        .unwrap_or_else(|e| panic!("decode {packet:?} ({v:?}): {e}"))
        .unwrap_or_else(|| panic!("incomplete {packet:?}"));
    assert_eq!(&decoded, packet, "{v:?}");
    assert!(buf.is_empty(), "one packet, all consumed");
}

// ------------------------------------------------------------------ samples

fn v5_samples() -> Vec<Packet> {
    let will = Will {
        topic: s("devices/clock-1/presence"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(3600),
            content_type: Some(s("text/plain")),
            response_topic: Some(s("devices/clock-1/reply")),
            correlation_data: Some(Bytes::from_static(&[0, 1, 2, 255])),
            user_properties: users(),
        },
    };
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 30,
        client_id: s("clock-1"),
        will: Some(will),
        username: Some(s("device")),
        password: Some(Bytes::from_static(b"s3cret\0binary")),
        properties: ConnectProperties {
            session_expiry_interval: Some(u32::MAX),
            receive_maximum: Some(NonZeroU16::new(20).unwrap()),
            maximum_packet_size: Some(nz32(65_536)),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: users(),
            authentication_method: Some(s("SCRAM-SHA-256")),
            authentication_data: Some(Bytes::from_static(b"client-first")),
        },
    };
    let minimal_connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: String::new(),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"token-without-user")),
        properties: ConnectProperties::default(),
    };
    let connack = ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties {
            session_expiry_interval: Some(600),
            receive_maximum: Some(NonZeroU16::new(100).unwrap()),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(true),
            maximum_packet_size: Some(nz32(1 << 20)),
            assigned_client_identifier: Some(s("auto-7f3a")),
            topic_alias_maximum: Some(16),
            reason_string: Some(s("welcome")),
            user_properties: users(),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(45),
            response_information: Some(s("replies/")),
            server_reference: Some(s("other.example:1883")),
            authentication_method: Some(s("SCRAM-SHA-256")),
            authentication_data: Some(Bytes::from_static(b"server-final")),
        },
    };
    let refused = ConnAck {
        session_present: false,
        reason_code: ReasonCode::BadUserNameOrPassword,
        properties: ConnAckProperties::default(),
    };
    let publish_props = PublishProperties {
        payload_format_indicator: Some(PayloadFormat::Unspecified),
        message_expiry_interval: Some(60),
        topic_alias: Some(NonZeroU16::new(3).unwrap()),
        response_topic: Some(s("replies/clock-1")),
        correlation_data: Some(Bytes::from_static(b"req-17")),
        user_properties: users(),
        subscription_identifiers: Vec::new(),
        content_type: Some(s("application/json")),
    };
    let publish = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: s("signs/lobby"),
        packet_id: Some(pid(65_535)),
        payload: Bytes::from_static(br#"{"text":"hello"}"#),
        properties: publish_props.clone(),
    };
    let to_subscriber = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("signs/lobby"),
        packet_id: Some(pid(7)),
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties {
            subscription_identifiers: vec![nz32(1), nz32(268_435_455), nz32(1)],
            user_properties: users(),
            ..PublishProperties::default()
        },
    };
    let alias_only = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: String::new(),
        packet_id: None,
        payload: Bytes::new(),
        properties: PublishProperties {
            topic_alias: Some(NonZeroU16::new(3).unwrap()),
            ..PublishProperties::default()
        },
    };
    let ack_props = AckProperties {
        reason_string: Some(s("why")),
        user_properties: users(),
    };
    vec![
        Packet::Connect(connect),
        Packet::Connect(minimal_connect),
        Packet::ConnAck(connack),
        Packet::ConnAck(refused),
        Packet::Publish(publish),
        Packet::Publish(to_subscriber),
        Packet::Publish(alias_only),
        Packet::PubAck(Ack::new(pid(1))),
        Packet::PubAck(Ack {
            packet_id: pid(2),
            reason_code: ReasonCode::NoMatchingSubscribers,
            properties: AckProperties::default(),
        }),
        Packet::PubAck(Ack {
            packet_id: pid(2),
            reason_code: ReasonCode::Success,
            properties: ack_props.clone(),
        }),
        Packet::PubRec(Ack {
            packet_id: pid(3),
            reason_code: ReasonCode::QuotaExceeded,
            properties: ack_props.clone(),
        }),
        Packet::PubRel(Ack {
            packet_id: pid(4),
            reason_code: ReasonCode::PacketIdentifierNotFound,
            properties: AckProperties::default(),
        }),
        Packet::PubComp(Ack::new(pid(5))),
        Packet::Subscribe(Subscribe {
            packet_id: pid(10),
            subscriptions: vec![
                Subscription::new("signs/#", QoS::AtLeastOnce),
                Subscription {
                    filter: s("messages/+"),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                },
                Subscription {
                    filter: s("$share/group/signs/+"),
                    options: SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendIfNewSubscription,
                    },
                },
            ],
            properties: SubscribeProperties {
                subscription_identifier: Some(nz32(300)),
                user_properties: users(),
            },
        }),
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            reason_codes: vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GrantedQoS2,
                ReasonCode::NotAuthorized,
                ReasonCode::SharedSubscriptionsNotSupported,
            ],
            properties: ack_props.clone(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(11),
            filters: vec![s("signs/#"), s("messages/+")],
            properties: UnsubscribeProperties {
                user_properties: users(),
            },
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(11),
            reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
            properties: ack_props,
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DisconnectWithWillMessage,
            properties: DisconnectProperties::default(),
        }),
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::NORMAL_DISCONNECTION,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some(s("bye")),
                user_properties: users(),
                server_reference: Some(s("elsewhere")),
            },
        }),
        Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some(s("SCRAM-SHA-256")),
                authentication_data: Some(Bytes::from_static(b"client-final")),
                reason_string: Some(s("step 2")),
                user_properties: users(),
            },
        }),
        Packet::Auth(Auth {
            reason_code: ReasonCode::Success,
            properties: AuthProperties::default(),
        }),
    ]
}

fn v311_samples() -> Vec<Packet> {
    let mut out = vec![
        Packet::Connect(Connect {
            protocol: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 60,
            client_id: s("mosq-abc"),
            will: Some(Will {
                topic: s("w"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: WillProperties::default(),
            }),
            username: Some(s("user")),
            password: Some(Bytes::from_static(b"pass")),
            properties: ConnectProperties::default(),
        }),
        Packet::Connect(Connect {
            protocol: ProtocolVersion::V311,
            clean_start: false,
            keep_alive: 0,
            client_id: String::new(),
            will: None,
            username: Some(s("only-user")),
            password: None,
            properties: ConnectProperties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: s("signs/1"),
            packet_id: None,
            payload: Bytes::from_static(b"{}"),
            properties: PublishProperties::default(),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("$SYS/x"),
            packet_id: Some(pid(1)),
            payload: Bytes::new(),
            properties: PublishProperties::default(),
        }),
        Packet::PubAck(Ack::new(pid(1))),
        Packet::PubRec(Ack::new(pid(2))),
        Packet::PubRel(Ack::new(pid(3))),
        Packet::PubComp(Ack::new(pid(4))),
        Packet::Subscribe(Subscribe {
            packet_id: pid(9),
            subscriptions: vec![
                Subscription::new("a/+", QoS::AtMostOnce),
                Subscription::new("b/#", QoS::ExactlyOnce),
            ],
            properties: SubscribeProperties::default(),
        }),
        Packet::SubAck(SubAck {
            packet_id: pid(9),
            reason_codes: vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError,
            ],
            properties: AckProperties::default(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(12),
            filters: vec![s("a/+")],
            properties: UnsubscribeProperties::default(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(12),
            reason_codes: Vec::new(),
            properties: AckProperties::default(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
    ];
    for code in 0..=5 {
        out.push(Packet::ConnAck(ConnAck {
            session_present: code == 0,
            reason_code: ReasonCode::from_v311_connack(code).unwrap(),
            properties: ConnAckProperties::default(),
        }));
    }
    out
}

/// What a packet becomes after a trip through 3.1.1.
fn as_v311(packet: &Packet) -> Packet {
    let mut p = packet.clone();
    match &mut p {
        Packet::Connect(c) => {
            c.properties = ConnectProperties::default();
            if let Some(w) = &mut c.will {
                w.properties = WillProperties::default();
            }
        }
        Packet::ConnAck(c) => {
            c.properties = ConnAckProperties::default();
            c.reason_code =
                ReasonCode::from_v311_connack(c.reason_code.to_v311_connack().unwrap()).unwrap();
        }
        Packet::Publish(p) => p.properties = PublishProperties::default(),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            *a = Ack::new(a.packet_id);
        }
        Packet::Subscribe(sub) => {
            sub.properties = SubscribeProperties::default();
            for s in &mut sub.subscriptions {
                s.options = SubscriptionOptions {
                    qos: s.options.qos,
                    ..SubscriptionOptions::default()
                };
            }
        }
        Packet::SubAck(a) => {
            a.properties = AckProperties::default();
            for c in &mut a.reason_codes {
                *c = ReasonCode::from_v311_suback(c.to_v311_suback().unwrap()).unwrap();
            }
        }
        Packet::Unsubscribe(u) => u.properties = UnsubscribeProperties::default(),
        Packet::UnsubAck(a) => {
            a.properties = AckProperties::default();
            a.reason_codes.clear();
        }
        Packet::Disconnect(d) => *d = Disconnect::default(),
        Packet::PingReq | Packet::PingResp | Packet::Auth(_) => {}
    }
    p
}

// -------------------------------------------------------------- round trips

#[test]
fn round_trip_every_packet_v5() {
    let samples = v5_samples();
    let mut kinds: Vec<PacketType> = samples.iter().map(Packet::packet_type).collect();
    kinds.dedup();
    assert_eq!(kinds.len(), 15, "every packet type is covered");
    for packet in &samples {
        assert_round_trip(packet, ProtocolVersion::V5);
    }
}

#[test]
fn round_trip_every_packet_v311() {
    for packet in &v311_samples() {
        assert_round_trip(packet, ProtocolVersion::V311);
    }
}

#[test]
fn v311_drops_properties_and_maps_reason_codes() {
    let mut encoded = 0;
    for packet in &v5_samples() {
        let mut input = packet.clone();
        if let Packet::Connect(c) = &mut input {
            c.protocol = ProtocolVersion::V311;
        }
        let mut buf = BytesMut::new();
        match encode(&input, ProtocolVersion::V311, &mut buf) {
            Ok(()) => {
                let expected = as_v311(&input);
                let got = decode_for(&expected, &mut buf, ProtocolVersion::V311)
                    .unwrap()
                    .unwrap();
                assert_eq!(got, expected);
                encoded += 1;
            }
            Err(e) => {
                assert!(buf.is_empty(), "nothing written on error");
                let expected = matches!(
                    &input,
                    Packet::Auth(_)
                        | Packet::Connect(Connect {
                            username: None,
                            password: Some(_),
                            ..
                        })
                ) || matches!(&input, Packet::Publish(p) if p.topic.is_empty());
                assert!(expected, "{input:?} failed with {e}");
            }
        }
    }
    assert!(encoded >= 18, "{encoded}");
}

#[test]
fn v311_suback_failure_codes_become_0x80() {
    let ack = Packet::SubAck(SubAck {
        packet_id: pid(1),
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::QuotaExceeded,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ],
        properties: AckProperties {
            reason_string: Some(s("dropped in 3.1.1")),
            user_properties: Vec::new(),
        },
    });
    assert_eq!(
        bytes_of(&ack, ProtocolVersion::V311),
        [0x90, 0x05, 0x00, 0x01, 0x01, 0x80, 0x80]
    );
}

#[test]
fn v311_connack_codes() {
    let connack = |code| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: code,
            properties: ConnAckProperties::default(),
        })
    };
    let cases = [
        (ReasonCode::Success, 0),
        (ReasonCode::UnsupportedProtocolVersion, 1),
        (ReasonCode::ClientIdentifierNotValid, 2),
        (ReasonCode::ServerUnavailable, 3),
        (ReasonCode::ServerBusy, 3),
        (ReasonCode::BadUserNameOrPassword, 4),
        (ReasonCode::NotAuthorized, 5),
        (ReasonCode::Banned, 5),
    ];
    for (code, byte) in cases {
        assert_eq!(
            bytes_of(&connack(code), ProtocolVersion::V311),
            [0x20, 0x02, 0x00, byte]
        );
    }
    // 3.1.1 closes the connection without a CONNACK for these [MQTT-3.2.2-6].
    let mut out = BytesMut::new();
    assert_eq!(
        encode(
            &connack(ReasonCode::MalformedPacket),
            ProtocolVersion::V311,
            &mut out
        ),
        Err(EncodeError::NoV311Equivalent(ReasonCode::MalformedPacket))
    );
    assert!(out.is_empty());
    // Return codes 6..=255 are reserved.
    let err = decode_client(&[0x20, 0x02, 0x00, 0x06], ProtocolVersion::V311).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

// ----------------------------------------------------------- byte vectors

#[test]
fn ping_and_disconnect_bytes() {
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        assert_eq!(bytes_of(&Packet::PingReq, v), [0xC0, 0x00]);
        assert_eq!(bytes_of(&Packet::PingResp, v), [0xD0, 0x00]);
        assert_eq!(
            bytes_of(&Packet::Disconnect(Disconnect::default()), v),
            [0xE0, 0x00]
        );
        assert_eq!(
            decode_server(&[0xC0, 0x00], Some(v)),
            Ok(Some(Packet::PingReq))
        );
        assert_eq!(decode_client(&[0xD0, 0x00], v), Ok(Some(Packet::PingResp)));
    }
}

#[test]
fn mosquitto_pub_v311_connect() {
    // `mosquitto_pub -V mqttv311 -i mosq-abc ...`: clean session, keep alive 60.
    let wire = [
        0x10, 0x14, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x08, b'm',
        b'o', b's', b'q', b'-', b'a', b'b', b'c',
    ];
    let expected = Packet::Connect(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        client_id: s("mosq-abc"),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    });
    assert_eq!(decode_server(&wire, None), Ok(Some(expected.clone())));
    assert_eq!(bytes_of(&expected, ProtocolVersion::V311), wire);
}

#[test]
fn v311_connect_with_will_and_credentials() {
    // --will-topic w --will-payload bye --will-qos 1 -u user -P pass -i c
    let mut wire = vec![0x10, 0x21];
    wire.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x3C]);
    wire.extend_from_slice(&[0x00, 0x01, b'c']);
    wire.extend_from_slice(&[0x00, 0x01, b'w', 0x00, 0x03, b'b', b'y', b'e']);
    wire.extend_from_slice(&[0x00, 0x04, b'u', b's', b'e', b'r']);
    wire.extend_from_slice(&[0x00, 0x04, b'p', b'a', b's', b's']);
    let Some(Packet::Connect(c)) = decode_server(&wire, None).unwrap() else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.protocol, ProtocolVersion::V311);
    let will = c.will.as_ref().unwrap();
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("w", &b"bye"[..]));
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, false));
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password.as_deref(), Some(&b"pass"[..]));
    assert_eq!(bytes_of(&Packet::Connect(c), ProtocolVersion::V311), wire);
}

#[test]
fn v5_connect_with_properties() {
    // Session Expiry Interval 60, Receive Maximum 20, client id "c1".
    let wire = [
        0x10, 0x17, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x08, 0x11, 0x00,
        0x00, 0x00, 0x3C, 0x21, 0x00, 0x14, 0x00, 0x02, b'c', b'1',
    ];
    let expected = Packet::Connect(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: s("c1"),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(60),
            receive_maximum: Some(NonZeroU16::new(20).unwrap()),
            ..ConnectProperties::default()
        },
    });
    assert_eq!(decode_server(&wire, None), Ok(Some(expected.clone())));
    assert_eq!(bytes_of(&expected, ProtocolVersion::V5), wire);
    assert_eq!(connect_protocol_version(&wire), Some(ProtocolVersion::V5));
}

#[test]
fn publish_bytes() {
    let wire = [
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'h', b'i',
    ];
    let Some(Packet::Publish(p)) = decode_server(&wire, Some(ProtocolVersion::V311)).unwrap()
    else {
        panic!("not a PUBLISH");
    };
    assert_eq!(
        (p.qos, p.packet_id, p.topic.as_str(), &p.payload[..]),
        (QoS::AtLeastOnce, Some(pid(1)), "a/b", &b"hi"[..])
    );
    // The same in MQTT 5 has a property length byte.
    let v5 = [
        0x32, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x00, b'h', b'i',
    ];
    assert_eq!(bytes_of(&Packet::Publish(p), ProtocolVersion::V5), v5);
}

#[test]
fn v5_short_forms() {
    let v5 = ProtocolVersion::V5;
    // PUBACK without reason code and properties means Success (§3.4.2.1).
    assert_eq!(
        decode_server(&[0x40, 0x02, 0x00, 0x01], Some(v5)),
        Ok(Some(Packet::PubAck(Ack::new(pid(1)))))
    );
    let no_match = [0x40, 0x03, 0x00, 0x01, 0x10];
    let packet = decode_client(&no_match, v5).unwrap().unwrap();
    assert_eq!(bytes_of(&packet, v5), no_match);
    // Reason code and empty properties: decodes the same, encodes shorter.
    assert_eq!(
        decode_server(&[0x62, 0x04, 0x00, 0x01, 0x00, 0x00], Some(v5)),
        Ok(Some(Packet::PubRel(Ack::new(pid(1)))))
    );
    // DISCONNECT: 0 bytes, reason only, reason + properties.
    let with_will = [0xE0, 0x01, 0x04];
    let packet = decode_server(&with_will, Some(v5)).unwrap().unwrap();
    assert_eq!(
        packet,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DisconnectWithWillMessage,
            properties: DisconnectProperties::default(),
        })
    );
    assert_eq!(bytes_of(&packet, v5), with_will);
    // AUTH with remaining length 0 is Success, which a server sends.
    assert_eq!(
        decode_client(&[0xF0, 0x00], v5),
        Ok(Some(Packet::Auth(Auth {
            reason_code: ReasonCode::Success,
            properties: AuthProperties::default(),
        })))
    );
    // CONNACK: flags, reason, empty properties.
    let connack = [0x20, 0x03, 0x00, 0x00, 0x00];
    let packet = decode_client(&connack, v5).unwrap().unwrap();
    assert_eq!(bytes_of(&packet, v5), connack);
}

#[test]
fn v5_subscribe_options_bytes() {
    // QoS 1, No Local, Retain As Published, Retain Handling 1.
    let wire = [
        0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, b'a', b'/', b'#', 0x1D,
    ];
    let Some(Packet::Subscribe(sub)) = decode_server(&wire, Some(ProtocolVersion::V5)).unwrap()
    else {
        panic!("not a SUBSCRIBE");
    };
    assert_eq!(
        sub.subscriptions[0].options,
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNewSubscription,
        }
    );
    assert_eq!(
        bytes_of(&Packet::Subscribe(sub.clone()), ProtocolVersion::V5),
        wire
    );
    // 3.1.1 keeps only the QoS.
    assert_eq!(
        bytes_of(&Packet::Subscribe(sub), ProtocolVersion::V311),
        [0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'#', 0x01]
    );
}

// ------------------------------------------------- normative statements

#[test]
fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    for first in [0x30, 0x82, 0xC0, 0xE0, 0xF0] {
        // Refused from the first byte, without waiting for the rest.
        let err = err_server(&[first], None);
        assert!(
            matches!(err, DecodeError::FirstPacketNotConnect(_)),
            "{err}"
        );
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    }
}

#[test]
fn mqtt_3_1_0_2_second_connect_is_protocol_error() {
    let connect = bytes_of(&v5_samples()[0], ProtocolVersion::V5);
    assert!(matches!(
        decode_server(&connect, None),
        Ok(Some(Packet::Connect(_)))
    ));
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let err = err_server(&connect, Some(v));
        assert_eq!(err, DecodeError::SecondConnect);
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    }
}

#[test]
fn server_packets_from_a_client_are_protocol_errors() {
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for wire in [
            &[0x20, 0x02, 0x00, 0x00][..],
            &[0x90, 0x03, 0x00, 0x01, 0x00],
            &[0xB0, 0x02, 0x00, 0x01],
            &[0xD0, 0x00],
        ] {
            let err = err_server(wire, Some(v));
            assert!(matches!(err, DecodeError::WrongDirection(_)), "{err}");
            assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        }
    }
}

#[test]
fn client_packets_from_a_server_are_protocol_errors() {
    let connect = bytes_of(&v5_samples()[0], ProtocolVersion::V5);
    for wire in [
        &connect[..],
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        &[0xC0, 0x00],
    ] {
        let err = decode_client(wire, ProtocolVersion::V5).unwrap_err();
        assert!(matches!(err, DecodeError::WrongDirection(_)), "{err}");
    }
    // A 3.1.1 server never sends DISCONNECT.
    let err = decode_client(&[0xE0, 0x00], ProtocolVersion::V311).unwrap_err();
    assert_eq!(err, DecodeError::WrongDirection(PacketType::Disconnect));
}

fn publish_with_topic(topic: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, topic.len() as u8];
    body.extend_from_slice(topic);
    body.extend_from_slice(b"payload");
    frame(0x30, &body)
}

#[test]
fn mqtt_1_5_4_1_invalid_utf8_is_malformed() {
    for topic in [
        &[0xC3, 0x28][..],         // bad continuation
        &[0xED, 0xA0, 0x80],       // U+D800, a surrogate
        &[0xC0, 0xAF],             // overlong '/'
        &[b'a', 0xFF],             // never valid
        &[0xF4, 0x90, 0x80, 0x80], // above U+10FFFF
    ] {
        let err = err_server(&publish_with_topic(topic), Some(ProtocolVersion::V311));
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket, "{topic:?}");
    }
    // Also in CONNECT's client identifier and v5 user properties.
    let mut body = b"\x00\x04MQTT\x05\x02\x00\x00".to_vec();
    body.extend_from_slice(&[0x07, 0x26, 0x00, 0x01, 0xFF, 0x00, 0x01, b'v']);
    body.extend_from_slice(&[0x00, 0x00]);
    let err = err_server(&frame(0x10, &body), None);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_1_5_4_2_nul_is_malformed() {
    let err = err_server(&publish_with_topic(b"a\0b"), Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // U+FEFF is not stripped or refused [MQTT-1.5.4-3].
    let bom = "\u{FEFF}a".as_bytes();
    let mut wire = publish_with_topic(bom);
    wire[1] += 1;
    wire.insert(4 + bom.len(), 0x00); // v5 property length
    let Some(Packet::Publish(p)) = decode_server(&wire, Some(ProtocolVersion::V5)).unwrap() else {
        panic!()
    };
    assert_eq!(p.topic, "\u{FEFF}a");
    // Encoding refuses U+0000 too.
    let mut bad = v311_samples()[2].clone();
    if let Packet::Publish(p) = &mut bad {
        p.topic = s("a\0");
    }
    assert_eq!(
        encoded_len(&bad, ProtocolVersion::V311),
        Err(EncodeError::NulInString)
    );
}

#[test]
fn mqtt_2_1_3_1_reserved_flags() {
    let v = Some(ProtocolVersion::V5);
    for wire in [
        &[0x41, 0x02, 0x00, 0x01][..],                     // PUBACK 0001
        &[0x60, 0x02, 0x00, 0x01],                         // PUBREL 0000, must be 0010
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // SUBSCRIBE 0000
        &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],       // UNSUBSCRIBE 0000
        &[0xC1, 0x00],
        &[0xE8, 0x00],
        &[0xF2, 0x00],
    ] {
        let err = err_server(wire, v);
        assert_eq!(
            err.reason_code(),
            ReasonCode::MalformedPacket,
            "{wire:?}: {err}"
        );
    }
    // Refused from the first byte.
    assert_eq!(
        err_server(&[0xC4], v).reason_code(),
        ReasonCode::MalformedPacket
    );
    let err = err_server(&[0x11], None);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // Packet type 0 is reserved in both versions, 15 in 3.1.1.
    assert_eq!(
        err_server(&[0x00, 0x00], v).reason_code(),
        ReasonCode::MalformedPacket
    );
    let err = err_server(&[0xF0, 0x00], Some(ProtocolVersion::V311));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_3_3_1_2_dup_on_qos0() {
    let mut wire = publish_with_topic(b"a");
    wire[0] = 0x38;
    let err = err_server(&wire, Some(ProtocolVersion::V311));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    assert!(err.to_string().contains("MQTT-3.3.1-2"), "{err}");
    let mut p = v311_samples()[2].clone();
    if let Packet::Publish(p) = &mut p {
        p.dup = true;
    }
    assert!(encoded_len(&p, ProtocolVersion::V311).is_err());
}

#[test]
fn mqtt_3_3_1_4_qos3_is_malformed() {
    let mut wire = publish_with_topic(b"a");
    wire[0] = 0x36;
    let err = err_server(&[0x36], Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    let err = err_server(&wire, Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_2_2_1_3_packet_id_zero_is_malformed() {
    let v = Some(ProtocolVersion::V311);
    for wire in [
        &[0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, b'x'][..],
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
        &[0x40, 0x02, 0x00, 0x00],
        &[0x62, 0x02, 0x00, 0x00],
    ] {
        let err = err_server(wire, v);
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket, "{wire:?}");
    }
}

#[test]
fn mqtt_3_3_2_2_topic_name_wildcards_are_malformed() {
    for topic in [&b"a/+"[..], b"#", b"signs/#", b"a+b"] {
        let err = err_server(&publish_with_topic(topic), Some(ProtocolVersion::V311));
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    // [MQTT-4.7.3-1]: a Topic Name is at least one character (3.1.1) ...
    let err = err_server(&publish_with_topic(b""), Some(ProtocolVersion::V311));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // ... and in 5 an empty one needs a Topic Alias: a Protocol Error.
    let wire = [0x30, 0x03, 0x00, 0x00, 0x00];
    let err = err_server(&wire, Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    let wire = [0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01];
    assert!(
        decode_server(&wire, Some(ProtocolVersion::V5))
            .unwrap()
            .is_some()
    );
    // The will topic is a Topic Name as well.
    let mut body = b"\x00\x04MQTT\x04\x06\x00\x00\x00\x01c\x00\x03a/#\x00\x00".to_vec();
    let err = err_server(&frame(0x10, &body), None);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    body[17] = b'b';
    assert!(decode_server(&frame(0x10, &body), None).unwrap().is_some());
}

#[test]
fn mqtt_3_8_3_3_empty_subscribe() {
    // 3.1.1 [MQTT-3.8.3-3] calls it a protocol violation; 5 [MQTT-3.8.3-2]
    // names it a Protocol Error.
    let err = err_server(&[0x82, 0x02, 0x00, 0x01], Some(ProtocolVersion::V311));
    assert!(matches!(err, DecodeError::Protocol(_)), "{err}");
    let err = err_server(&[0x82, 0x03, 0x00, 0x01, 0x00], Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    let empty = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscriptions: Vec::new(),
        properties: SubscribeProperties::default(),
    });
    assert!(encoded_len(&empty, ProtocolVersion::V5).is_err());
}

#[test]
fn mqtt_3_10_3_2_empty_unsubscribe() {
    let err = err_server(&[0xA2, 0x02, 0x00, 0x01], Some(ProtocolVersion::V311));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    let err = err_server(&[0xA2, 0x03, 0x00, 0x01, 0x00], Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn mqtt_3_8_3_4_v311_subscribe_reserved_bits_and_qos3() {
    let v = Some(ProtocolVersion::V311);
    for options in [0x03, 0x04, 0x80, 0x1D] {
        let wire = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', options];
        assert_eq!(
            err_server(&wire, v).reason_code(),
            ReasonCode::MalformedPacket
        );
    }
}

#[test]
fn mqtt_3_8_3_5_v5_subscription_options() {
    let v = Some(ProtocolVersion::V5);
    let wire = |filter: &[u8], options: u8| {
        let mut body = vec![0x00, 0x01, 0x00, 0x00, filter.len() as u8];
        body.extend_from_slice(filter);
        body.push(options);
        frame(0x82, &body)
    };
    // Reserved bits 6 and 7: malformed [MQTT-3.8.3-5].
    assert_eq!(
        err_server(&wire(b"a", 0x40), v).reason_code(),
        ReasonCode::MalformedPacket
    );
    // QoS 3 and Retain Handling 3: Protocol Errors (§3.8.3.1).
    assert_eq!(
        err_server(&wire(b"a", 0x03), v).reason_code(),
        ReasonCode::ProtocolError
    );
    assert_eq!(
        err_server(&wire(b"a", 0x30), v).reason_code(),
        ReasonCode::ProtocolError
    );
    // No Local on a shared subscription [MQTT-3.8.3-4].
    let err = err_server(&wire(b"$share/g/a", 0x04), v);
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert!(
        decode_server(&wire(b"$share/g/a", 0x00), v)
            .unwrap()
            .is_some()
    );
    assert!(decode_server(&wire(b"a", 0x04), v).unwrap().is_some());
}

#[test]
fn mqtt_3_1_2_3_connect_reserved_flag() {
    let body = b"\x00\x04MQTT\x04\x03\x00\x00\x00\x01c";
    let err = err_server(&frame(0x10, body), None);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    assert!(err.to_string().contains("MQTT-3.1.2-3"));
}

#[test]
fn mqtt_3_1_2_will_flags() {
    for flags in [
        0x1E, // Will QoS 3 [MQTT-3.1.2-12]
        0x0A, // Will QoS 1 without a will [MQTT-3.1.2-11]
        0x22, // Will Retain without a will [MQTT-3.1.2-13]
    ] {
        let body = [
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x00, 0x00, 0x01, b'c',
        ];
        let err = err_server(&frame(0x10, &body), None);
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket, "{flags:#x}");
    }
}

#[test]
fn mqtt_3_1_2_22_password_needs_username_in_v311() {
    let body = |level| {
        let mut b = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x42, 0x00, 0x00];
        if level == 5 {
            b.push(0x00);
        }
        b.extend_from_slice(&[0x00, 0x01, b'c', 0x00, 0x02, b'p', b'w']);
        frame(0x10, &b)
    };
    let err = err_server(&body(4), None);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // MQTT 5 allows a password without a user name.
    let Some(Packet::Connect(c)) = decode_server(&body(5), None).unwrap() else {
        panic!()
    };
    assert_eq!(
        (c.username, c.password.as_deref()),
        (None, Some(&b"pw"[..]))
    );
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_version() {
    // MQTT 3.1 ("MQIsdp", level 3): answer with 3.1.1's CONNACK 0x01.
    let body = b"\x00\x06MQIsdp\x03\x02\x00\x3C\x00\x01c";
    let err = err_server(&frame(0x10, body), None);
    assert_eq!(err, DecodeError::UnsupportedProtocolVersion { level: 3 });
    assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(err.connack_version(), Some(ProtocolVersion::V311));
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: err.reason_code(),
        properties: ConnAckProperties::default(),
    });
    assert_eq!(
        bytes_of(&connack, err.connack_version().unwrap()),
        [0x20, 0x02, 0x00, 0x01]
    );
    // A future level: answer with MQTT 5's 0x84.
    let err = err_server(
        &frame(0x10, b"\x00\x04MQTT\x06\x02\x00\x3C\x00\x00\x01c"),
        None,
    );
    assert_eq!(err.connack_version(), Some(ProtocolVersion::V5));
    assert_eq!(
        bytes_of(&connack, err.connack_version().unwrap()),
        [0x20, 0x03, 0x00, 0x84, 0x00]
    );
    // Not MQTT at all [MQTT-3.1.2-1].
    let err = err_server(&frame(0x10, b"\x00\x04MQTX\x04\x02\x00\x3C\x00\x01c"), None);
    assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
}

#[test]
fn malformed_v5_connect_still_tells_its_version() {
    // A broker may answer a bad CONNECT with a CONNACK in its version (§4.13).
    let wire = frame(
        0x10,
        b"\x00\x04MQTT\x05\x02\x00\x3C\x03\x21\x00\x00\x00\x01c",
    );
    let mut buf = BytesMut::from(&wire[..]);
    let err = decode(&mut buf, None, MAX).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidPropertyValue(PropertyId::ReceiveMaximum)
    );
    assert_eq!(&buf[..], &wire[..], "nothing consumed on error");
    assert_eq!(connect_protocol_version(&buf), Some(ProtocolVersion::V5));
    assert_eq!(connect_protocol_version(&[0x10, 0x05, 0x00]), None);
    assert_eq!(connect_protocol_version(&[0x30, 0x00]), None);
}

// --------------------------------------------------------------- properties

fn v5_publish_with_props(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b't'];
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    body.extend_from_slice(b"payload");
    frame(0x30, &body)
}

#[test]
fn duplicate_property_is_protocol_error() {
    // "It is a Protocol Error to include the Payload Format Indicator more
    // than once" (§3.3.2.3.2), and likewise for every single property.
    let wire = v5_publish_with_props(&[0x01, 0x00, 0x01, 0x01]);
    let err = err_server(&wire, Some(ProtocolVersion::V5));
    assert_eq!(
        err,
        DecodeError::DuplicateProperty(PropertyId::PayloadFormatIndicator)
    );
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    let wire = v5_publish_with_props(&[0x23, 0x00, 0x01, 0x23, 0x00, 0x02]);
    assert_eq!(
        err_server(&wire, Some(ProtocolVersion::V5)),
        DecodeError::DuplicateProperty(PropertyId::TopicAlias)
    );
}

#[test]
fn property_not_allowed_in_packet_is_malformed() {
    // Session Expiry Interval belongs to CONNECT, CONNACK and DISCONNECT.
    let wire = v5_publish_with_props(&[0x11, 0x00, 0x00, 0x00, 0x01]);
    let err = err_server(&wire, Some(ProtocolVersion::V5));
    assert_eq!(
        err,
        DecodeError::PropertyNotAllowed(PropertyId::SessionExpiryInterval)
    );
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // Unknown identifiers, and identifiers with a continuation bit.
    for props in [&[0x04, 0x00][..], &[0x7F, 0x00], &[0x81, 0x01, 0x00]] {
        let err = err_server(&v5_publish_with_props(props), Some(ProtocolVersion::V5));
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    // A property running past the property length.
    let err = err_server(
        &v5_publish_with_props(&[0x02, 0x00, 0x00]),
        Some(ProtocolVersion::V5),
    );
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn property_values_the_spec_rules_out() {
    let v = Some(ProtocolVersion::V5);
    for (props, id) in [
        (&[0x23, 0x00, 0x00][..], PropertyId::TopicAlias), // [MQTT-3.3.2-8]
        (&[0x01, 0x02], PropertyId::PayloadFormatIndicator),
        (&[0x0B, 0x00], PropertyId::SubscriptionIdentifier),
        (
            &[0x08, 0x00, 0x03, b'a', b'/', b'+'],
            PropertyId::ResponseTopic,
        ), // [MQTT-3.3.2-14]
    ] {
        let err = err_server(&v5_publish_with_props(props), v);
        assert_eq!(err, DecodeError::InvalidPropertyValue(id));
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    }
    // CONNECT: Receive Maximum 0, Maximum Packet Size 0, Request Problem
    // Information 2, Authentication Data without Authentication Method.
    for props in [
        &[0x21, 0x00, 0x00][..],
        &[0x27, 0x00, 0x00, 0x00, 0x00],
        &[0x17, 0x02],
        &[0x16, 0x00, 0x01, 0xAA],
    ] {
        let mut body = b"\x00\x04MQTT\x05\x02\x00\x00".to_vec();
        body.push(props.len() as u8);
        body.extend_from_slice(props);
        body.extend_from_slice(b"\x00\x01c");
        let err = err_server(&frame(0x10, &body), None);
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError, "{props:?}");
    }
    // CONNACK: Maximum QoS 2, Retain Available 2.
    for props in [&[0x24, 0x02][..], &[0x25, 0x02]] {
        let mut body = vec![0x00, 0x00, props.len() as u8];
        body.extend_from_slice(props);
        let err = decode_client(&frame(0x20, &body), ProtocolVersion::V5).unwrap_err();
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    }
}

#[test]
fn user_properties_repeat_in_order() {
    let props = [
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'2', //
        0x26, 0x00, 0x01, b'a', 0x00, 0x00, //
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'1',
    ];
    let Some(Packet::Publish(p)) =
        decode_server(&v5_publish_with_props(&props), Some(ProtocolVersion::V5)).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        p.properties.user_properties,
        [(s("k"), s("2")), (s("a"), s("")), (s("k"), s("1"))]
    );
}

#[test]
fn mqtt_3_3_4_6_subscription_identifiers() {
    // Repeatable in PUBLISH from the server; never from a client.
    let props = [0x0B, 0x01, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F];
    let wire = v5_publish_with_props(&props);
    let Some(Packet::Publish(p)) = decode_client(&wire, ProtocolVersion::V5).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.properties.subscription_identifiers,
        [nz32(1), nz32(268_435_455)]
    );
    let err = err_server(&wire, Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    // Once in SUBSCRIBE.
    let wire = frame(
        0x82,
        &[
            0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
        ],
    );
    assert_eq!(
        err_server(&wire, Some(ProtocolVersion::V5)),
        DecodeError::DuplicateProperty(PropertyId::SubscriptionIdentifier)
    );
}

#[test]
fn reason_code_not_defined_for_packet_is_malformed() {
    let v = Some(ProtocolVersion::V5);
    for wire in [
        &[0x40, 0x03, 0x00, 0x01, 0x04][..], // PUBACK "Disconnect with Will"
        &[0x40, 0x03, 0x00, 0x01, 0x03],     // undefined everywhere
        &[0x62, 0x03, 0x00, 0x01, 0x10],     // PUBREL "No matching subscribers"
        &[0xE0, 0x01, 0x01],                 // DISCONNECT "Granted QoS 1"
        &[0xF0, 0x01, 0x87],                 // AUTH "Not authorized"
    ] {
        let err = err_server(wire, v);
        assert!(
            matches!(err, DecodeError::InvalidReasonCode { .. }),
            "{err}"
        );
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    let bad = Packet::PubRel(Ack {
        packet_id: pid(1),
        reason_code: ReasonCode::NoMatchingSubscribers,
        properties: AckProperties::default(),
    });
    assert!(matches!(
        encoded_len(&bad, ProtocolVersion::V5),
        Err(EncodeError::InvalidReasonCode { .. })
    ));
}

#[test]
fn reason_code_and_property_tables() {
    let mut codes = 0;
    for byte in 0..=255u8 {
        if let Some(code) = ReasonCode::from_u8(byte) {
            assert_eq!(code.as_u8(), byte);
            codes += 1;
        }
        if let Some(id) = PropertyId::from_u8(byte) {
            assert_eq!(id.as_u8(), byte);
        }
    }
    assert_eq!(codes, ReasonCode::ALL.len());
    assert_eq!(ReasonCode::MalformedPacket.as_u8(), 0x81);
    assert_eq!(ReasonCode::WildcardSubscriptionsNotSupported.as_u8(), 0xA2);
    assert_eq!(PropertyId::SharedSubscriptionAvailable.as_u8(), 0x2A);
    // Every code is valid in some packet.
    let kinds = [
        PacketType::ConnAck,
        PacketType::PubAck,
        PacketType::PubRel,
        PacketType::SubAck,
        PacketType::UnsubAck,
        PacketType::Disconnect,
        PacketType::Auth,
    ];
    for code in ReasonCode::ALL {
        assert!(kinds.iter().any(|&k| code.is_valid_for(k)), "{code:?}");
    }
}

// ---------------------------------------------------------- framing, sizes

#[test]
fn remaining_length_over_4_bytes() {
    let v = Some(ProtocolVersion::V311);
    // Refused as soon as the fourth byte still says "more", without a fifth.
    let err = err_server(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], v);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    let err = err_server(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], v);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // Three bytes of continuation: still waiting.
    assert_eq!(decode_server(&[0x30, 0xFF, 0xFF, 0xFF], v), Ok(None));
    // Not the shortest encoding [MQTT-1.5.5-1].
    let err = err_server(&[0xC0, 0x80, 0x00], v);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // Four bytes is the maximum, 268,435,455.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(decode(&mut buf, v, usize::MAX), Ok(None));
}

#[test]
fn huge_declared_length_refused_before_body() {
    let v = Some(ProtocolVersion::V5);
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let capacity = buf.capacity();
    let err = decode(&mut buf, v, MAX).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 5 + 268_435_455,
            max: MAX,
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    assert_eq!(
        (buf.len(), buf.capacity()),
        (5, capacity),
        "nothing taken, nothing reserved"
    );
    // Before CONNECT, too.
    let err = err_server(&[0x10, 0x80, 0x80, 0x80, 0x01], None);
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
}

#[test]
fn max_packet_size_counts_the_whole_packet() {
    let v = Some(ProtocolVersion::V5);
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    assert!(decode(&mut buf, v, 1).is_err());
    assert_eq!(decode(&mut buf, v, 2), Ok(Some(Packet::PingReq)));
    for packet in v5_samples() {
        let len = encoded_len(&packet, ProtocolVersion::V5).unwrap();
        let mut buf = BytesMut::from(&bytes_of(&packet, ProtocolVersion::V5)[..]);
        let version = (!matches!(packet, Packet::Connect(_))).then_some(ProtocolVersion::V5);
        if !sent_by_server(&packet) {
            assert!(matches!(
                decode(&mut buf.clone(), version, len - 1),
                Err(DecodeError::PacketTooLarge { .. })
            ));
            assert!(decode(&mut buf, version, len).unwrap().is_some());
        }
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let v = Some(ProtocolVersion::V311);
    for wire in [
        &[0xC0, 0x01, 0x00][..],
        &[0x40, 0x03, 0x00, 0x01, 0x00],
        &[0xE0, 0x01, 0x00],
    ] {
        assert_eq!(
            err_server(wire, v).reason_code(),
            ReasonCode::MalformedPacket
        );
    }
    // Fields running past the remaining length.
    let err = err_server(&[0x30, 0x03, 0x00, 0x05, b'a'], v);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn partial_packets_byte_by_byte() {
    for (v, samples) in [
        (ProtocolVersion::V5, v5_samples()),
        (ProtocolVersion::V311, v311_samples()),
    ] {
        for packet in samples {
            let wire = bytes_of(&packet, v);
            let mut buf = BytesMut::new();
            for (i, &byte) in wire.iter().enumerate() {
                buf.extend_from_slice(&[byte]);
                let got = decode_for(&packet, &mut buf, v).unwrap();
                if i + 1 < wire.len() {
                    assert_eq!(got, None, "{packet:?} after {} bytes", i + 1);
                    assert_eq!(buf.len(), i + 1, "a partial packet stays in the buffer");
                } else {
                    assert_eq!(got.as_ref(), Some(&packet));
                    assert!(buf.is_empty());
                }
            }
        }
    }
}

#[test]
fn back_to_back_packets_one_at_a_time() {
    let v = ProtocolVersion::V5;
    let samples: Vec<Packet> = v5_samples()
        .into_iter()
        .filter(|p| !sent_by_server(p) && !matches!(p, Packet::Connect(_)))
        .collect();
    let mut buf = BytesMut::new();
    for p in &samples {
        encode(p, v, &mut buf).unwrap();
    }
    buf.extend_from_slice(&[0xC0]); // the start of one more
    for p in &samples {
        assert_eq!(decode(&mut buf, Some(v), MAX).unwrap().as_ref(), Some(p));
    }
    assert_eq!(decode(&mut buf, Some(v), MAX), Ok(None));
    assert_eq!(&buf[..], &[0xC0]);
}

#[test]
fn publish_payload_shares_the_read_buffer() {
    let wire = publish_with_topic(b"t");
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&wire);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(ProtocolVersion::V311), MAX).unwrap()
    else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"payload");
    let at = p.payload.as_ptr() as usize;
    assert!(at > start && at < start + 64, "not copied");
}

#[test]
fn encode_errors_write_nothing() {
    let mut out = BytesMut::from(&b"keep"[..]);
    let auth = v5_samples().pop().unwrap();
    assert!(matches!(
        encode(&auth, ProtocolVersion::V311, &mut out),
        Err(EncodeError::Invalid(_))
    ));
    let long = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(1),
        filters: vec!["x".repeat(70_000)],
        properties: UnsubscribeProperties::default(),
    });
    assert_eq!(
        encode(&long, ProtocolVersion::V5, &mut out),
        Err(EncodeError::FieldTooLong(70_000))
    );
    let no_id = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("t"),
        packet_id: None,
        payload: Bytes::new(),
        properties: PublishProperties::default(),
    });
    assert!(encode(&no_id, ProtocolVersion::V5, &mut out).is_err());
    let mut max_qos_2 = v5_samples()[2].clone();
    if let Packet::ConnAck(c) = &mut max_qos_2 {
        c.properties.maximum_qos = Some(QoS::ExactlyOnce);
    }
    assert!(encode(&max_qos_2, ProtocolVersion::V5, &mut out).is_err());
    let mut wrong_version = v5_samples()[0].clone();
    if let Packet::Connect(c) = &mut wrong_version {
        c.protocol = ProtocolVersion::V311;
    }
    assert!(encode(&wrong_version, ProtocolVersion::V5, &mut out).is_err());
    assert_eq!(&out[..], b"keep");
}

#[test]
fn large_payload_uses_four_length_bytes() {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("big"),
        packet_id: None,
        payload: Bytes::from(vec![7u8; 2_097_152]),
        properties: PublishProperties::default(),
    });
    let wire = bytes_of(&p, ProtocolVersion::V311);
    assert_eq!(&wire[1..5], &[0x85, 0x80, 0x80, 0x01]);
    assert_eq!(wire.len(), encoded_len(&p, ProtocolVersion::V311).unwrap());
    let mut buf = BytesMut::from(&wire[..]);
    let got = decode(&mut buf, Some(ProtocolVersion::V311), usize::MAX);
    assert!(got == Ok(Some(p)), "the 2 MiB publish comes back");
}

// ------------------------------------------------------------------ fuzzing

/// xorshift64: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Clone, Copy, Debug)]
struct Setting {
    server_side: bool,
    version: Option<ProtocolVersion>,
    max: usize,
}

/// Decodes everything in `input` as `setting` says. Every packet that comes
/// out must encode, and decode again to itself.
fn drive(input: &[u8], setting: Setting) -> usize {
    let mut buf = BytesMut::from(input);
    let mut version = setting.version;
    let mut packets = 0;
    loop {
        let before = buf.len();
        let result = if setting.server_side {
            decode(&mut buf, version, setting.max)
        } else {
            decode_as_client(
                &mut buf,
                version.unwrap_or(ProtocolVersion::V5),
                setting.max,
            )
        };
        let packet = match result {
            Ok(Some(packet)) => packet,
            Ok(None) => return packets,
            Err(e) => {
                let _ = (e.reason_code(), e.connack_version(), e.to_string());
                assert_eq!(buf.len(), before, "nothing consumed on error");
                return packets;
            }
        };
        packets += 1;
        assert!(buf.len() < before);
        let v = match &packet {
            Packet::Connect(c) => c.protocol,
            _ => version.unwrap_or(ProtocolVersion::V5),
        };
        let mut wire = BytesMut::new();
        encode(&packet, v, &mut wire).unwrap_or_else(|e| panic!("re-encode {packet:?}: {e}"));
        assert_eq!(encoded_len(&packet, v), Ok(wire.len()));
        let again = if !setting.server_side {
            decode_as_client(&mut wire, v, usize::MAX)
        } else if matches!(packet, Packet::Connect(_)) {
            decode(&mut wire, None, usize::MAX)
        } else {
            decode(&mut wire, Some(v), usize::MAX)
        };
        assert_eq!(again, Ok(Some(packet.clone())), "{:?}", setting);
        assert!(wire.is_empty());
        if let Packet::Connect(c) = &packet {
            version = Some(c.protocol);
        }
    }
}

#[test]
fn fuzz_decode_never_panics_and_round_trips() {
    const ITERATIONS: usize = 200_000;
    let started = Instant::now();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for p in v5_samples() {
        corpus.push(bytes_of(&p, ProtocolVersion::V5));
    }
    for p in v311_samples() {
        corpus.push(bytes_of(&p, ProtocolVersion::V311));
    }
    let versions = [None, Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)];
    let maxes = [8, 64, 512, MAX, usize::MAX];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut decoded = 0;
    for _ in 0..ITERATIONS {
        let base = rng.pick(&corpus).clone();
        let mut input = match rng.below(7) {
            // Random bytes behind a plausible first byte.
            0 => {
                let len = rng.below(40);
                let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(first) = v.first_mut() {
                    *first = (*first & 0xF0) | (rng.below(3) as u8 * 2);
                }
                v
            }
            // Bit flips.
            1 | 2 => {
                let mut v = base;
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                v
            }
            // Truncation.
            3 => {
                let mut v = base;
                v.truncate(rng.below(v.len() + 1));
                v
            }
            // Splice two packets.
            4 => {
                let other = rng.pick(&corpus);
                let mut v = base[..rng.below(base.len() + 1)].to_vec();
                v.extend_from_slice(&other[rng.below(other.len() + 1)..]);
                v
            }
            // Overwrite, insert or delete one byte.
            5 => {
                let mut v = base;
                let i = rng.below(v.len());
                match rng.below(3) {
                    0 => v[i] = rng.next() as u8,
                    1 => v.insert(i, rng.next() as u8),
                    _ => {
                        v.remove(i);
                    }
                }
                v
            }
            // A sequence, the second one damaged.
            _ => {
                let mut v = base;
                let mut other = rng.pick(&corpus).clone();
                let i = rng.below(other.len());
                other[i] = rng.next() as u8;
                v.extend_from_slice(&other);
                v
            }
        };
        // Now and then, fix up the remaining length so the body is reached.
        if rng.below(4) == 0 && input.len() >= 2 && input.len() < 129 {
            input[1] = (input.len() - 2) as u8;
        }
        for _ in 0..4 {
            let setting = Setting {
                server_side: rng.below(3) != 0,
                version: *rng.pick(&versions),
                max: *rng.pick(&maxes),
            };
            decoded += drive(&input, setting);
        }
    }
    let elapsed = started.elapsed();
    eprintln!("fuzz: {ITERATIONS} inputs, {decoded} packets decoded, {elapsed:?}");
    assert!(
        decoded > ITERATIONS / 10,
        "the mutations must often still decode: {decoded}"
    );
}

// ------------------------------------- issue 14: names, CONNECT, lengths, properties
//
// Items 1, 2, 3 and 7 of issue 14. The same cases, as raw bytes over real
// connections, are in `server/tests/common/malformed.rs` (run by
// `server/tests/mqtt.rs` and seeded into `server/tests/mqtt_fuzz.rs`).

/// The places a name goes, each as a whole packet holding `name` there, with
/// the version it is sent in and whether the server (`decode`) reads it.
fn packets_naming(name: &[u8]) -> Vec<(&'static str, Vec<u8>, Option<ProtocolVersion>)> {
    let field = |bytes: &[u8]| {
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    };
    let mut places = Vec::new();
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let props: &[u8] = if v == ProtocolVersion::V5 {
            &[0x00]
        } else {
            &[]
        };
        let connect = |flags: u8, payload: &[u8]| {
            let mut body = field(b"MQTT");
            body.extend_from_slice(&[v.level(), flags, 0x00, 0x3C]);
            body.extend_from_slice(props);
            body.extend_from_slice(payload);
            frame(0x10, &body)
        };
        places.push(("client id", connect(0x02, &field(name)), None));
        let user = [field(b"c"), field(name)].concat();
        places.push(("user name", connect(0x82, &user), None));
        let will = [field(b"c"), props.to_vec(), field(name), field(b"x")].concat();
        places.push(("will topic", connect(0x06, &will), None));
        let publish = [field(name), props.to_vec(), b"payload".to_vec()].concat();
        places.push(("topic name", frame(0x30, &publish), Some(v)));
        let sub = [vec![0x00, 0x01], props.to_vec(), field(name), vec![0x00]].concat();
        places.push(("subscribe filter", frame(0x82, &sub), Some(v)));
        let unsub = [vec![0x00, 0x01], props.to_vec(), field(name)].concat();
        places.push(("unsubscribe filter", frame(0xA2, &unsub), Some(v)));
    }
    places
}

#[test]
fn mqtt_1_5_4_1_and_2_surrogates_and_nul_in_every_name_are_malformed() {
    for bad in [&b"a\xED\xA0\x80"[..], b"\xED\xBF\xBF", b"a\0"] {
        for (place, wire, v) in packets_naming(bad) {
            let err = err_server(&wire, v);
            assert_eq!(
                err.reason_code(),
                ReasonCode::MalformedPacket,
                "{place} {bad:?} {v:?}: {err}"
            );
        }
    }
}

#[test]
fn mqtt_1_5_4_control_characters_and_non_characters_in_names_are_malformed() {
    let refused = [
        '\u{1}',
        '\t',
        '\n',
        '\r',
        '\u{1B}',
        '\u{1F}',
        '\u{7F}',
        '\u{80}',
        '\u{9F}',
        '\u{FDD0}',
        '\u{FDEF}',
        '\u{FFFE}',
        '\u{FFFF}',
        '\u{1FFFE}',
        '\u{10FFFF}',
    ];
    for c in refused {
        let name = format!("a{c}b");
        for (place, wire, v) in packets_naming(name.as_bytes()) {
            let err = err_server(&wire, v);
            assert_eq!(
                err.reason_code(),
                ReasonCode::MalformedPacket,
                "{place} with {c:?} in {v:?}"
            );
            assert!(err.to_string().contains("control character"), "{err}");
        }
    }
    // Their neighbours, and everything else printable, are names.
    for ok in [
        '\u{20}', '\u{7E}', '\u{A0}', '\u{FDCF}', '\u{FDF0}', '\u{FEFF}', '\u{FFFD}', '😀',
    ] {
        let name = format!("a{ok}b");
        for (place, wire, v) in packets_naming(name.as_bytes()) {
            let got = decode_server(&wire, v);
            assert!(matches!(got, Ok(Some(_))), "{place} with {ok:?}: {got:?}");
        }
    }
}

#[test]
fn mqtt_1_5_4_response_topic_and_assigned_client_id_are_names_too() {
    let wire = v5_publish_with_props(&[0x08, 0x00, 0x03, b'a', b'\n', b'b']);
    let err = err_server(&wire, Some(ProtocolVersion::V5));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    let connack = frame(0x20, &[0x00, 0x00, 0x05, 0x12, 0x00, 0x02, b'a', 0x07]);
    let err = decode_client(&connack, ProtocolVersion::V5).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn free_text_keeps_control_characters() {
    // A user property and a reason string are the application's text.
    let props = [0x26, 0x00, 0x01, b'k', 0x00, 0x03, b'a', b'\n', b'b'];
    let Some(Packet::Publish(p)) =
        decode_server(&v5_publish_with_props(&props), Some(ProtocolVersion::V5)).unwrap()
    else {
        panic!()
    };
    assert_eq!(p.properties.user_properties, [(s("k"), s("a\nb"))]);
    let wire = frame(0xE0, &[0x80, 0x06, 0x1F, 0x00, 0x03, b'x', b'\t', b'y']);
    let Some(Packet::Disconnect(d)) = decode_server(&wire, Some(ProtocolVersion::V5)).unwrap()
    else {
        panic!()
    };
    assert_eq!(d.properties.reason_string.as_deref(), Some("x\ty"));
    assert_round_trip(&Packet::Publish(p), ProtocolVersion::V5);
}

#[test]
fn names_a_decoder_refuses_are_not_encoded() {
    let mut publish = v311_samples()[2].clone();
    let mut connect = v5_samples()[0].clone();
    let mut subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscriptions: vec![Subscription::new("signs/+", QoS::AtLeastOnce)],
        properties: SubscribeProperties::default(),
    });
    for bad in ["a\nb", "a\u{FFFF}", "\u{85}"] {
        if let Packet::Publish(p) = &mut publish {
            p.topic = s(bad);
        }
        if let Packet::Connect(c) = &mut connect {
            c.client_id = s(bad);
        }
        if let Packet::Subscribe(sub) = &mut subscribe {
            sub.subscriptions[0].filter = s(bad);
        }
        for (packet, v) in [
            (&publish, ProtocolVersion::V311),
            (&connect, ProtocolVersion::V5),
            (&subscribe, ProtocolVersion::V5),
        ] {
            let mut out = BytesMut::new();
            assert_eq!(
                encode(packet, v, &mut out),
                Err(EncodeError::DisallowedInName)
            );
            assert!(out.is_empty(), "nothing written");
        }
    }
}

#[test]
fn mqtt_3_1_2_1_protocol_name_must_be_mqtt() {
    for name in [
        &b"\x00\x04MQTX"[..],
        b"\x00\x04mqtt",
        b"\x00\x03MQT",  // "MQT", then "T" where the level goes
        b"\x00\x05MQTT", // "MQTT\x05": the right letters, a wrong length
        b"\x00\x00",
        b"\x00\x06MQIsd", // runs into the level
    ] {
        let mut body = name.to_vec();
        body.extend_from_slice(b"\x05\x02\x00\x3C\x00\x00\x01c");
        let wire = frame(0x10, &body);
        let err = err_server(&wire, None);
        assert_eq!(err, DecodeError::NotMqtt, "{name:?}");
        // Nothing is answered: neither the error nor the bytes name a version.
        assert_eq!(err.connack_version(), None);
        assert_eq!(connect_protocol_version(&wire), None, "{name:?}");
        assert!(err.to_string().contains("MQTT-3.1.2-1"));
    }
    // 3.1's name is MQTT: it gets 3.1.1's "unacceptable protocol version".
    let err = err_server(
        &frame(0x10, b"\x00\x06MQIsdp\x03\x02\x00\x3C\x00\x01c"),
        None,
    );
    assert_eq!(err.connack_version(), Some(ProtocolVersion::V311));
}

#[test]
fn mqtt_3_1_2_16_to_19_user_name_and_password_flags_match_their_fields() {
    let field = |bytes: &[u8]| {
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    };
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let connect = |flags: u8, fields: &[&[u8]]| {
            let mut body = field(b"MQTT");
            body.extend_from_slice(&[v.level(), flags, 0x00, 0x3C]);
            if v == ProtocolVersion::V5 {
                body.push(0x00);
            }
            for f in fields {
                body.extend(field(f));
            }
            frame(0x10, &body)
        };
        for (rule, wire) in [
            (
                "16: a user name without its flag",
                connect(0x02, &[b"c", b"u"]),
            ),
            ("17: the flag without a user name", connect(0x82, &[b"c"])),
            (
                "18: a password without its flag",
                connect(0x82, &[b"c", b"u", b"p"]),
            ),
            (
                "19: the flag without a password",
                connect(0xC2, &[b"c", b"u"]),
            ),
        ] {
            let err = err_server(&wire, None);
            assert_eq!(
                err.reason_code(),
                ReasonCode::MalformedPacket,
                "{rule} {v:?}"
            );
            // A 5.0 client gets CONNACK 0x81 in its own version (§4.13).
            assert_eq!(connect_protocol_version(&wire), Some(v));
        }
        let Some(Packet::Connect(c)) =
            decode_server(&connect(0xC2, &[b"c", b"u", b"p"]), None).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some(&b"p"[..]))
        );
    }
}

#[test]
fn mqtt_2_1_3_1_every_reserved_flag_value_of_every_packet_type_is_malformed() {
    use PacketType as P;
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for kind in [
            P::Connect,
            P::ConnAck,
            P::PubAck,
            P::PubRec,
            P::PubRel,
            P::PubComp,
            P::Subscribe,
            P::SubAck,
            P::Unsubscribe,
            P::UnsubAck,
            P::PingReq,
            P::PingResp,
            P::Disconnect,
            P::Auth,
        ] {
            let required = match kind {
                P::PubRel | P::Subscribe | P::Unsubscribe => 0b0010,
                _ => 0,
            };
            for flags in (0..16u8).filter(|&f| f != required) {
                let first = [((kind as u8) << 4) | flags];
                // Refused from the first byte, whichever side reads it.
                let err = if kind == P::Connect {
                    err_server(&first, None)
                } else if kind.sent_by_client() {
                    err_server(&first, Some(v))
                } else {
                    decode_client(&first, v).unwrap_err()
                };
                assert_eq!(
                    err.reason_code(),
                    ReasonCode::MalformedPacket,
                    "{kind:?} flags {flags:04b} {v:?}: {err}"
                );
            }
        }
    }
}

#[test]
fn fixed_remaining_lengths_are_refused_from_the_header() {
    let v311 = Some(ProtocolVersion::V311);
    let v5 = Some(ProtocolVersion::V5);
    // Only the fixed header has arrived: no waiting for a body that must not
    // exist (PINGREQ §3.12.1, 3.1.1 DISCONNECT §3.14.1) or must be 2 bytes
    // (3.1.1 PUBACK..PUBCOMP §3.4.1–3.7.1).
    for (wire, v) in [
        (&[0xC0, 0x01][..], v5),
        (&[0xC0, 0x7F], v311),
        (&[0xC0, 0x80, 0x01], v5),
        (&[0xE0, 0x01], v311),
        (&[0x40, 0x03], v311),
        (&[0x50, 0x01], v311),
        (&[0x62, 0x04], v311),
        (&[0x70, 0x00], v311),
    ] {
        let err = err_server(wire, v);
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket, "{wire:?}");
    }
    for wire in [&[0xD0, 0x01][..], &[0x20, 0x03], &[0xB0, 0x03]] {
        let err = decode_client(wire, ProtocolVersion::V311).unwrap_err();
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket, "{wire:?}");
    }
    let err = decode_client(&[0xD0, 0x01], ProtocolVersion::V5).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // MQTT 5 lets acknowledgements and DISCONNECT grow.
    assert!(decode_server(&[0xE0, 0x01, 0x04], v5).unwrap().is_some());
    assert!(
        decode_server(&[0x40, 0x03, 0x00, 0x01, 0x80], v5)
            .unwrap()
            .is_some()
    );
    assert_eq!(decode_server(&[0xC0, 0x00], v5), Ok(Some(Packet::PingReq)));
}

#[test]
fn mqtt_3_14_2_1_disconnect_codes_only_a_server_sends_are_protocol_errors() {
    let v = Some(ProtocolVersion::V5);
    let server_only = [
        0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
        0xA2,
    ];
    let either = [
        0x00, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
    ];
    for code in server_only {
        let err = err_server(&[0xE0, 0x01, code], v);
        assert!(
            matches!(err, DecodeError::ReasonCodeFromWrongSide { .. }),
            "{code:#x}: {err}"
        );
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        // From the server they are what they say.
        let got = decode_client(&[0xE0, 0x01, code], ProtocolVersion::V5);
        assert!(matches!(got, Ok(Some(Packet::Disconnect(_)))), "{code:#x}");
    }
    for code in either.into_iter().chain([0x04]) {
        let got = decode_server(&[0xE0, 0x01, code], v);
        assert!(matches!(got, Ok(Some(Packet::Disconnect(_)))), "{code:#x}");
    }
    // "Disconnect with Will Message" is the client's alone.
    let err = decode_client(&[0xE0, 0x01, 0x04], ProtocolVersion::V5).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    // Codes DISCONNECT does not define at all stay malformed.
    for code in [0x01, 0x02, 0x05, 0x10, 0x84, 0x88, 0xA3, 0xFF] {
        let err = err_server(&[0xE0, 0x01, code], v);
        assert!(
            matches!(err, DecodeError::InvalidReasonCode { .. }),
            "{code:#x}"
        );
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    // The Session Expiry Interval is the client's to send [MQTT-3.14.2-2].
    let expiry = [0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0A];
    assert!(decode_server(&expiry, v).unwrap().is_some());
    let err = decode_client(&expiry, ProtocolVersion::V5).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    // Every DISCONNECT code is someone's.
    for code in ReasonCode::ALL {
        if code.is_valid_for(PacketType::Disconnect) {
            assert!(
                code.sent_by_client(PacketType::Disconnect)
                    || code.sent_by_server(PacketType::Disconnect),
                "{code:?}"
            );
        }
    }
}

#[test]
fn mqtt_3_15_2_1_auth_codes_say_who_sends_them() {
    let v = Some(ProtocolVersion::V5);
    // Success is the server accepting; Re-authenticate is the client asking.
    for wire in [&[0xF0, 0x02, 0x00, 0x00][..], &[0xF0, 0x00]] {
        // Left out, the code is Success too.
        let err = err_server(wire, v);
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError, "{wire:?}");
    }
    assert!(
        decode_server(&[0xF0, 0x02, 0x19, 0x00], v)
            .unwrap()
            .is_some()
    );
    assert!(
        decode_server(&[0xF0, 0x02, 0x18, 0x00], v)
            .unwrap()
            .is_some()
    );
    let err = decode_client(&[0xF0, 0x02, 0x19, 0x00], ProtocolVersion::V5).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert!(
        decode_client(&[0xF0, 0x00], ProtocolVersion::V5)
            .unwrap()
            .is_some()
    );
}

/// Table 2-4 of MQTT 5.0: which packets (and the will) carry which property.
fn table_2_4(id: PropertyId) -> &'static [&'static str] {
    use PropertyId as I;
    const ACKS: [&str; 6] = [
        "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBACK", "UNSUBACK",
    ];
    match id {
        I::PayloadFormatIndicator
        | I::MessageExpiryInterval
        | I::ContentType
        | I::ResponseTopic
        | I::CorrelationData => &["PUBLISH", "will"],
        I::SubscriptionIdentifier => &["PUBLISH", "SUBSCRIBE"],
        I::SessionExpiryInterval => &["CONNECT", "CONNACK", "DISCONNECT"],
        I::AssignedClientIdentifier
        | I::ServerKeepAlive
        | I::ResponseInformation
        | I::MaximumQoS
        | I::RetainAvailable
        | I::WildcardSubscriptionAvailable
        | I::SubscriptionIdentifierAvailable
        | I::SharedSubscriptionAvailable => &["CONNACK"],
        I::AuthenticationMethod | I::AuthenticationData => &["CONNECT", "CONNACK", "AUTH"],
        I::RequestProblemInformation | I::RequestResponseInformation => &["CONNECT"],
        I::WillDelayInterval => &["will"],
        I::ServerReference => &["CONNACK", "DISCONNECT"],
        I::ReasonString => &[
            "CONNACK",
            ACKS[0],
            ACKS[1],
            ACKS[2],
            ACKS[3],
            ACKS[4],
            ACKS[5],
            "DISCONNECT",
            "AUTH",
        ],
        I::ReceiveMaximum | I::TopicAliasMaximum | I::MaximumPacketSize => &["CONNECT", "CONNACK"],
        I::TopicAlias => &["PUBLISH"],
        I::UserProperty => &[
            "CONNECT",
            "will",
            "CONNACK",
            "PUBLISH",
            ACKS[0],
            ACKS[1],
            ACKS[2],
            ACKS[3],
            ACKS[4],
            ACKS[5],
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "DISCONNECT",
            "AUTH",
        ],
    }
}

/// One property `id` with a value of its type that is valid wherever the
/// property is allowed.
fn one_property(id: PropertyId) -> Vec<u8> {
    use PropertyId as I;
    let value: &[u8] = match id {
        I::PayloadFormatIndicator
        | I::RequestProblemInformation
        | I::RequestResponseInformation
        | I::MaximumQoS
        | I::RetainAvailable
        | I::WildcardSubscriptionAvailable
        | I::SubscriptionIdentifierAvailable
        | I::SharedSubscriptionAvailable => &[0x01],
        I::ServerKeepAlive | I::ReceiveMaximum | I::TopicAliasMaximum | I::TopicAlias => {
            &[0x00, 0x01]
        }
        I::MessageExpiryInterval
        | I::SessionExpiryInterval
        | I::WillDelayInterval
        | I::MaximumPacketSize => &[0x00, 0x00, 0x00, 0x01],
        I::SubscriptionIdentifier => &[0x01],
        I::CorrelationData | I::AuthenticationData => &[0x00, 0x01, 0xAA],
        I::UserProperty => &[0x00, 0x01, b'k', 0x00, 0x01, b'v'],
        _ => &[0x00, 0x01, b'a'],
    };
    [vec![id.as_u8()], value.to_vec()].concat()
}

/// `packet` carrying the properties `props` (MQTT 5), and which side reads it.
fn carrying(packet: &str, props: &[u8]) -> (Vec<u8>, bool) {
    let len = props.len() as u8;
    let with = |head: &[u8], tail: &[u8]| [head, &[len], props, tail].concat();
    let connect = |props_here: bool| {
        let mut body = b"\x00\x04MQTT\x05\x06\x00\x3C".to_vec();
        if props_here {
            body.extend(with(&[], b"\x00\x01c\x00"));
        } else {
            body.extend_from_slice(b"\x00\x00\x01c");
            body.extend(with(&[], &[]));
        }
        body.extend_from_slice(b"\x00\x01t\x00\x00");
        frame(0x10, &body)
    };
    match packet {
        "CONNECT" => {
            // The will's properties are empty: one byte 0 before its topic.
            let mut body = b"\x00\x04MQTT\x05\x06\x00\x3C".to_vec();
            body.extend(with(&[], b"\x00\x01c"));
            body.extend_from_slice(b"\x00\x00\x01t\x00\x00");
            (frame(0x10, &body), true)
        }
        "will" => (connect(false), true),
        "CONNACK" => (frame(0x20, &with(&[0x00, 0x00], &[])), false),
        "PUBLISH" => (frame(0x30, &with(b"\x00\x01t", b"x")), false),
        "PUBACK" => (frame(0x40, &with(&[0x00, 0x01, 0x00], &[])), true),
        "PUBREC" => (frame(0x50, &with(&[0x00, 0x01, 0x00], &[])), true),
        "PUBREL" => (frame(0x62, &with(&[0x00, 0x01, 0x00], &[])), true),
        "PUBCOMP" => (frame(0x70, &with(&[0x00, 0x01, 0x00], &[])), true),
        "SUBSCRIBE" => (frame(0x82, &with(&[0x00, 0x01], b"\x00\x01a\x00")), true),
        "SUBACK" => (frame(0x90, &with(&[0x00, 0x01], &[0x00])), false),
        "UNSUBSCRIBE" => (frame(0xA2, &with(&[0x00, 0x01], b"\x00\x01a")), true),
        "UNSUBACK" => (frame(0xB0, &with(&[0x00, 0x01], &[0x00])), false),
        "DISCONNECT" => (frame(0xE0, &with(&[0x00], &[])), true),
        "AUTH" => (frame(0xF0, &with(&[0x18], &[])), true),
        other => panic!("{other}"),
    }
}

#[test]
fn mqtt_2_2_2_2_every_property_outside_its_packet_is_malformed() {
    let places = [
        "CONNECT",
        "will",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "DISCONNECT",
        "AUTH",
    ];
    let mut refused = 0;
    for id in PropertyId::ALL {
        for place in places {
            let (wire, server_reads) = carrying(place, &one_property(id));
            let got = if place == "CONNECT" || place == "will" {
                decode_server(&wire, None)
            } else if server_reads {
                decode_server(&wire, Some(ProtocolVersion::V5))
            } else {
                decode_client(&wire, ProtocolVersion::V5)
            };
            if table_2_4(id).contains(&place) {
                // Allowed: read, or refused for another reason (Authentication
                // Data alone, a client's Subscription Identifier), never 0x81.
                if let Err(e) = &got {
                    assert_eq!(
                        e.reason_code(),
                        ReasonCode::ProtocolError,
                        "{id:?} in {place}"
                    );
                }
            } else {
                assert_eq!(
                    got,
                    Err(DecodeError::PropertyNotAllowed(id)),
                    "{id:?} in {place}"
                );
                assert_eq!(
                    DecodeError::PropertyNotAllowed(id).reason_code(),
                    ReasonCode::MalformedPacket
                );
                refused += 1;
            }
        }
    }
    // 27 properties in 14 places, 64 of the pairs allowed.
    assert_eq!(refused, 27 * 14 - 64);
}

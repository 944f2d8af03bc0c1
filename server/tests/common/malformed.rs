//! Input the broker must refuse, one case per rule, written byte by byte as a
//! misbehaving client would send it, with what the client must see before the
//! connection closes. `mqtt.rs` sends each case over a real connection and
//! checks the answer; `mqtt_fuzz.rs` sends each one as it is and then uses
//! them as seeds to mutate.

use marquee::mqtt::{ProtocolVersion, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// One refused input.
pub struct Case {
    /// The rule, as the specification numbers it ("1.5.4", "3.1.2-1",
    /// "3.14.2-1", "2.2.2.2"...), so that a test can pick its rule's cases.
    pub rule: &'static str,
    pub what: &'static str,
    pub version: ProtocolVersion,
    /// `true`: `bytes` follow a CONNECT the broker accepted; `false`: `bytes`
    /// are the CONNECT.
    pub after_connect: bool,
    pub bytes: Vec<u8>,
    /// The reason code of the CONNACK (for a CONNECT) or DISCONNECT the
    /// broker sends before closing; `None` when it closes without a word
    /// (3.1.1 has no code for a malformed packet; a peer that is not MQTT).
    pub answer: Option<ReasonCode>,
}

/// A fixed header (with the Remaining Length as a variable byte integer) and `body`.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let low = u8::try_from(len % 128).unwrap_or(0);
        len /= 128;
        out.push(if len > 0 { low | 0x80 } else { low });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A UTF-8 string or binary field: its two byte length, then the bytes.
pub fn field(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A CONNECT: protocol name field `name` (as given, length included),
/// protocol level of `version`, `flags`, keep-alive 60, no properties (5),
/// then `payload` (fields already length-prefixed).
fn connect_with_name(version: ProtocolVersion, name: &[u8], flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = name.to_vec();
    body.push(version.level());
    body.push(flags);
    body.extend_from_slice(&[0x00, 0x3C]);
    if version == V5 {
        body.push(0x00);
    }
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

/// A CONNECT with `flags` whose payload is `fields`, each length-prefixed.
fn connect(version: ProtocolVersion, flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    let payload: Vec<u8> = fields.iter().flat_map(|f| field(f)).collect();
    connect_with_name(version, &field(b"MQTT"), flags, &payload)
}

/// A CONNECT with the protocol name field `name` (length included).
fn connect_named(version: ProtocolVersion, name: &[u8]) -> Vec<u8> {
    connect_with_name(version, name, 0x02, &field(b"c"))
}

/// A CONNECT with a will on topic `topic`, and `will_props` (5) before it.
fn connect_will(version: ProtocolVersion, topic: &[u8], will_props: &[u8]) -> Vec<u8> {
    let mut payload = field(b"w");
    if version == V5 {
        payload.push(u8::try_from(will_props.len()).unwrap_or(0));
        payload.extend_from_slice(will_props);
    }
    payload.extend(field(topic));
    payload.extend(field(b"gone"));
    connect_with_name(version, &field(b"MQTT"), 0x06, &payload)
}

/// A QoS 0 PUBLISH on `topic`.
pub fn publish(version: ProtocolVersion, topic: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    if version == V5 {
        body.push(0x00);
    }
    body.extend_from_slice(b"{}");
    frame(0x30, &body)
}

/// `first`'s packet: `head`, the properties `props` (MQTT 5), then `tail`.
fn with_props(first: u8, head: &[u8], props: &[u8], tail: &[u8]) -> Vec<u8> {
    let len = u8::try_from(props.len()).unwrap_or(0);
    frame(first, &[head, &[len], props, tail].concat())
}

fn subscribe(version: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    let props: &[u8] = if version == V5 { &[0x00] } else { &[] };
    frame(
        0x82,
        &[&[0x00, 0x01], props, &field(filter), &[0x00]].concat(),
    )
}

fn unsubscribe(version: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    let props: &[u8] = if version == V5 { &[0x00] } else { &[] };
    frame(0xA2, &[&[0x00, 0x01], props, &field(filter)].concat())
}

/// What a malformed packet gets: a CONNACK or DISCONNECT 0x81 in 5, silence in 3.1.1.
fn malformed(version: ProtocolVersion) -> Option<ReasonCode> {
    (version == V5).then_some(ReasonCode::MalformedPacket)
}

/// Cases after a CONNECT, and CONNECTs, as (rule, what, bytes, answer).
type Rows = Vec<(&'static str, &'static str, Vec<u8>, Option<ReasonCode>)>;

/// Every case, in both versions where the rule applies to both. (A table:
/// one row a line reads better than rustfmt's one field a line.)
#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |version, after_connect, rows: Rows| {
        for (rule, what, bytes, answer) in rows {
            cases.push(Case { rule, what, version, after_connect, bytes, answer });
        }
    };
    for v in [V311, V5] {
        let m = malformed(v);
        // 1: names. Surrogates and U+0000 are ill-formed [MQTT-1.5.4-1/2];
        // control characters and non-characters are refused by choice.
        add(v, true, vec![
            ("1.5.4", "topic with a newline", publish(v, b"a\nb"), m),
            ("1.5.4", "topic with U+FFFF", publish(v, "a\u{FFFF}".as_bytes()), m),
            ("1.5.4", "topic with an encoded U+D800", publish(v, b"a\xED\xA0\x80"), m),
            ("1.5.4", "topic with U+0000", publish(v, b"a\0b"), m),
            ("1.5.4", "filter with U+0007", subscribe(v, b"signs/\x07"), m),
            ("1.5.4", "unsubscribe with U+009F", unsubscribe(v, "a\u{9F}".as_bytes()), m),
        ]);
        add(v, false, vec![
            ("1.5.4", "client id with ESC", connect(v, 0x02, &[b"\x1B[31m"]), m),
            ("1.5.4", "client id with an encoded U+DFFF", connect(v, 0x02, &[b"\xED\xBF\xBF"]), m),
            ("1.5.4", "user name with U+FDD0", connect(v, 0x82, &[b"c", "\u{FDD0}".as_bytes()]), m),
            ("1.5.4", "will topic with DEL", connect_will(v, b"w/\x7F", &[]), m),
        ]);
        // 2: the protocol name [MQTT-3.1.2-1]: nothing is answered; the
        // user name and password flags against their fields [MQTT-3.1.2-16..19].
        add(v, false, vec![
            ("3.1.2-1", "protocol name MQTX", connect_named(v, b"\x00\x04MQTX"), None),
            ("3.1.2-1", "protocol name mqtt", connect_named(v, b"\x00\x04mqtt"), None),
            ("3.1.2-1", "protocol name length 3", connect_named(v, b"\x00\x03MQTT"), None),
            ("3.1.2-1", "protocol name length 5", connect_named(v, b"\x00\x05MQTT"), None),
            ("3.1.2-16", "user name without its flag", connect(v, 0x02, &[b"c", b"u"]), m),
            ("3.1.2-17", "user name flag, no user name", connect(v, 0x82, &[b"c"]), m),
            ("3.1.2-18", "password without its flag", connect(v, 0x82, &[b"c", b"u", b"p"]), m),
            ("3.1.2-19", "password flag, no password", connect(v, 0xC2, &[b"c", b"u"]), m),
        ]);
        // 3: fixed lengths and reserved flags.
        add(v, true, vec![
            ("3.12.1", "PINGREQ with a body", vec![0xC0, 0x01, 0x00], m),
            ("3.12.1", "PINGREQ declaring a body never sent", vec![0xC0, 0x05], m),
            ("2.1.3-1", "PINGREQ with flags 0001", vec![0xC1, 0x00], m),
            ("2.1.3-1", "PUBACK with flags 0010", vec![0x42, 0x02, 0x00, 0x01], m),
            ("2.1.3-1", "PUBREL with flags 0000", vec![0x60, 0x02, 0x00, 0x01], m),
            ("2.1.3-1", "DISCONNECT with flags 1111", vec![0xEF, 0x00], m),
            ("2.1.3-1", "SUBSCRIBE with flags 0000", [&[0x80], &subscribe(v, b"a")[1..]].concat(), m),
        ]);
    }
    let (m, p) = (Some(ReasonCode::MalformedPacket), Some(ReasonCode::ProtocolError));
    let session_expiry = [0x11, 0x00, 0x00, 0x00, 0x0A];
    let connect_head = b"\x00\x04MQTT\x05\x02\x00\x3C";
    add(V5, false, vec![
        ("1.5.4", "will topic with U+1FFFE", connect_will(V5, "w/\u{1FFFE}".as_bytes(), &[]), m),
        // 7: properties a packet may not carry are malformed (§2.2.2.2).
        ("2.2.2.2", "CONNECT with Topic Alias",
            with_props(0x10, connect_head, &[0x23, 0x00, 0x01], b"\x00\x01c"), m),
        ("2.2.2.2", "will with Session Expiry Interval", connect_will(V5, b"w/t", &session_expiry), m),
    ]);
    add(V311, false, vec![
        ("3.1.2-22", "3.1.1 password without a user name", connect(V311, 0x42, &[b"c", b"p"]), None),
    ]);
    add(V311, true, vec![
        ("3.14.1", "3.1.1 DISCONNECT with a body", vec![0xE0, 0x01, 0x00], None),
        ("3.4.1", "3.1.1 PUBACK of 3 bytes", vec![0x40, 0x03, 0x00, 0x01, 0x00], None),
        ("2.1.2", "AUTH in 3.1.1", vec![0xF0, 0x00], None),
    ]);
    add(V5, true, vec![
        ("2.1.3-1", "AUTH with flags 0001", vec![0xF1, 0x00], m),
        // DISCONNECT reason codes (§3.14.2.1): a code only a server sends is
        // a Protocol Error; a code DISCONNECT does not define is malformed.
        ("3.14.2-1", "DISCONNECT 0x8E Session taken over", vec![0xE0, 0x01, 0x8E], p),
        ("3.14.2-1", "DISCONNECT 0x8B Server shutting down", vec![0xE0, 0x02, 0x8B, 0x00], p),
        ("3.14.2-1", "DISCONNECT 0x01", vec![0xE0, 0x01, 0x01], m),
        ("3.14.2-1", "DISCONNECT 0x05", vec![0xE0, 0x01, 0x05], m),
        // AUTH's Success (also when left out) is the server's (§3.15.2.1).
        ("3.15.2-1", "AUTH Success from a client", vec![0xF0, 0x00], p),
        ("2.2.2.2", "PUBLISH with Session Expiry Interval",
            with_props(0x30, b"\x00\x01t", &session_expiry, b""), m),
        ("2.2.2.2", "SUBSCRIBE with Topic Alias",
            with_props(0x82, b"\x00\x01", &[0x23, 0x00, 0x01], b"\x00\x01a\x00"), m),
        ("2.2.2.2", "DISCONNECT with Receive Maximum",
            with_props(0xE0, b"\x00", &[0x21, 0x00, 0x0A], b""), m),
        ("2.2.2.2", "PUBACK with Content Type",
            with_props(0x40, b"\x00\x01\x00", &[0x03, 0x00, 0x01, b'x'], b""), m),
    ]);
    cases
}

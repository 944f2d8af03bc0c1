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

fn connect(version: ProtocolVersion, flags: u8, payload: &[u8]) -> Vec<u8> {
    connect_with_name(version, &field(b"MQTT"), flags, payload)
}

/// A CONNECT whose client id is `id`.
fn connect_id(version: ProtocolVersion, id: &[u8]) -> Vec<u8> {
    connect(version, 0x02, &field(id))
}

/// A CONNECT with a will on topic `topic`.
fn connect_will(version: ProtocolVersion, topic: &[u8]) -> Vec<u8> {
    let mut payload = field(b"w");
    if version == V5 {
        payload.push(0x00); // will properties
    }
    payload.extend(field(topic));
    payload.extend(field(b"gone"));
    connect(version, 0x06, &payload)
}

/// A CONNECT with user name `user` (and no password).
fn connect_user(version: ProtocolVersion, user: &[u8]) -> Vec<u8> {
    let mut payload = field(b"u");
    payload.extend(field(user));
    connect(version, 0x82, &payload)
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

/// A QoS 0 PUBLISH on `t` carrying the property bytes `props` (MQTT 5).
fn publish_with_props(props: &[u8]) -> Vec<u8> {
    let mut body = field(b"t");
    body.push(u8::try_from(props.len()).unwrap_or(0));
    body.extend_from_slice(props);
    frame(0x30, &body)
}

fn subscribe(version: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if version == V5 {
        body.push(0x00);
    }
    body.extend(field(filter));
    body.push(0x00);
    frame(0x82, &body)
}

fn unsubscribe(version: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if version == V5 {
        body.push(0x00);
    }
    body.extend(field(filter));
    frame(0xA2, &body)
}

/// What a malformed packet gets: a CONNACK or DISCONNECT 0x81 in 5, silence in 3.1.1.
fn malformed(version: ProtocolVersion) -> Option<ReasonCode> {
    (version == V5).then_some(ReasonCode::MalformedPacket)
}

fn protocol_error(version: ProtocolVersion) -> Option<ReasonCode> {
    (version == V5).then_some(ReasonCode::ProtocolError)
}

/// Every case, in both versions where the rule applies to both.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |rule, what, version, after_connect, bytes, answer| {
        cases.push(Case {
            rule,
            what,
            version,
            after_connect,
            bytes,
            answer,
        });
    };
    for v in [V311, V5] {
        // 1: names. Surrogates and U+0000 are ill-formed [MQTT-1.5.4-1/2];
        // control characters and non-characters are refused by choice.
        let m = malformed(v);
        add(
            "1.5.4",
            "topic with a newline",
            v,
            true,
            publish(v, b"a\nb"),
            m,
        );
        add(
            "1.5.4",
            "topic with U+FFFF",
            v,
            true,
            publish(v, "a\u{FFFF}".as_bytes()),
            m,
        );
        add(
            "1.5.4",
            "topic with an encoded U+D800",
            v,
            true,
            publish(v, b"a\xED\xA0\x80"),
            m,
        );
        add(
            "1.5.4",
            "topic with U+0000",
            v,
            true,
            publish(v, b"a\0b"),
            m,
        );
        add(
            "1.5.4",
            "filter with U+0007",
            v,
            true,
            subscribe(v, b"signs/\x07"),
            m,
        );
        add(
            "1.5.4",
            "unsubscribe with U+009F",
            v,
            true,
            unsubscribe(v, "a\u{9F}".as_bytes()),
            m,
        );
        add(
            "1.5.4",
            "client id with ESC",
            v,
            false,
            connect_id(v, b"\x1B[31mred"),
            m,
        );
        add(
            "1.5.4",
            "client id with an encoded U+DFFF",
            v,
            false,
            connect_id(v, b"\xED\xBF\xBF"),
            m,
        );
        add(
            "1.5.4",
            "user name with U+FDD0",
            v,
            false,
            connect_user(v, "u\u{FDD0}".as_bytes()),
            m,
        );
        add(
            "1.5.4",
            "will topic with DEL",
            v,
            false,
            connect_will(v, b"w/\x7F"),
            m,
        );

        // 2: the protocol name [MQTT-3.1.2-1]: nothing is answered.
        add(
            "3.1.2-1",
            "protocol name MQTX",
            v,
            false,
            connect_with_name(v, &field(b"MQTX"), 0x02, &field(b"c")),
            None,
        );
        add(
            "3.1.2-1",
            "protocol name mqtt",
            v,
            false,
            connect_with_name(v, &field(b"mqtt"), 0x02, &field(b"c")),
            None,
        );
        add(
            "3.1.2-1",
            "protocol name length 3",
            v,
            false,
            connect_with_name(v, b"\x00\x03MQTT", 0x02, &field(b"c")),
            None,
        );
        add(
            "3.1.2-1",
            "protocol name length 5",
            v,
            false,
            connect_with_name(v, b"\x00\x05MQTT", 0x02, &field(b"c")),
            None,
        );
        // The flags against their fields [MQTT-3.1.2-16..19].
        add(
            "3.1.2-16",
            "user name without its flag",
            v,
            false,
            connect(v, 0x02, &[field(b"c"), field(b"user")].concat()),
            m,
        );
        add(
            "3.1.2-17",
            "user name flag without a user name",
            v,
            false,
            connect(v, 0x82, &field(b"c")),
            m,
        );
        add(
            "3.1.2-18",
            "password without its flag",
            v,
            false,
            connect(
                v,
                0x82,
                &[field(b"c"), field(b"user"), field(b"pw")].concat(),
            ),
            m,
        );
        add(
            "3.1.2-19",
            "password flag without a password",
            v,
            false,
            connect(v, 0xC2, &[field(b"c"), field(b"user")].concat()),
            m,
        );

        // 3: fixed lengths and reserved flags.
        add(
            "3.12.1",
            "PINGREQ with a body",
            v,
            true,
            vec![0xC0, 0x01, 0x00],
            m,
        );
        add(
            "3.12.1",
            "PINGREQ declaring a body never sent",
            v,
            true,
            vec![0xC0, 0x05],
            m,
        );
        add(
            "2.1.3-1",
            "PINGREQ with flags 0001",
            v,
            true,
            vec![0xC1, 0x00],
            m,
        );
        add(
            "2.1.3-1",
            "PUBACK with flags 0010",
            v,
            true,
            vec![0x42, 0x02, 0x00, 0x01],
            m,
        );
        add(
            "2.1.3-1",
            "PUBREL with flags 0000",
            v,
            true,
            vec![0x60, 0x02, 0x00, 0x01],
            m,
        );
        add(
            "2.1.3-1",
            "DISCONNECT with flags 1111",
            v,
            true,
            vec![0xEF, 0x00],
            m,
        );
        add(
            "2.1.3-1",
            "SUBSCRIBE with flags 0000",
            v,
            true,
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            m,
        );
    }
    let (m311, m5, p5) = (None, malformed(V5), protocol_error(V5));
    add(
        "1.5.4",
        "will topic with U+1FFFE",
        V5,
        false,
        connect_will(V5, "w/\u{1FFFE}".as_bytes()),
        m5,
    );
    add(
        "3.1.2-22",
        "3.1.1 password without a user name",
        V311,
        false,
        connect(V311, 0x42, &[field(b"c"), field(b"pw")].concat()),
        m311,
    );
    add(
        "3.14.1",
        "3.1.1 DISCONNECT with a body",
        V311,
        true,
        vec![0xE0, 0x01, 0x00],
        m311,
    );
    add(
        "3.4.1",
        "3.1.1 PUBACK of 3 bytes",
        V311,
        true,
        vec![0x40, 0x03, 0x00, 0x01, 0x00],
        m311,
    );
    add("2.1.2", "AUTH in 3.1.1", V311, true, vec![0xF0, 0x00], m311);
    add(
        "2.1.3-1",
        "AUTH with flags 0001",
        V5,
        true,
        vec![0xF1, 0x00],
        m5,
    );
    // DISCONNECT reason codes (§3.14.2.1): a code only a server sends is a
    // Protocol Error; a code DISCONNECT does not define is malformed.
    add(
        "3.14.2-1",
        "DISCONNECT 0x8E Session taken over",
        V5,
        true,
        vec![0xE0, 0x01, 0x8E],
        p5,
    );
    add(
        "3.14.2-1",
        "DISCONNECT 0x8B Server shutting down",
        V5,
        true,
        vec![0xE0, 0x02, 0x8B, 0x00],
        p5,
    );
    add(
        "3.14.2-1",
        "DISCONNECT 0x01",
        V5,
        true,
        vec![0xE0, 0x01, 0x01],
        m5,
    );
    add(
        "3.14.2-1",
        "DISCONNECT 0x05",
        V5,
        true,
        vec![0xE0, 0x01, 0x05],
        m5,
    );
    // AUTH's Success (also when left out) is the server's (§3.15.2.1).
    add(
        "3.15.2-1",
        "AUTH Success from a client",
        V5,
        true,
        vec![0xF0, 0x00],
        p5,
    );
    // 7: properties a packet may not carry are malformed (§2.2.2.2).
    add(
        "2.2.2.2",
        "PUBLISH with Session Expiry Interval",
        V5,
        true,
        publish_with_props(&[0x11, 0x00, 0x00, 0x00, 0x0A]),
        m5,
    );
    add(
        "2.2.2.2",
        "SUBSCRIBE with Topic Alias",
        V5,
        true,
        frame(
            0x82,
            &[0x00, 0x01, 0x03, 0x23, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        ),
        m5,
    );
    add(
        "2.2.2.2",
        "DISCONNECT with Receive Maximum",
        V5,
        true,
        vec![0xE0, 0x05, 0x00, 0x03, 0x21, 0x00, 0x0A],
        m5,
    );
    add(
        "2.2.2.2",
        "PUBACK with Content Type",
        V5,
        true,
        frame(0x40, &[0x00, 0x01, 0x00, 0x04, 0x03, 0x00, 0x01, b'x']),
        m5,
    );
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[0x05, 0x02, 0x00, 0x3C, 0x03, 0x23, 0x00, 0x01]);
    body.extend(field(b"c"));
    add(
        "2.2.2.2",
        "CONNECT with Topic Alias",
        V5,
        false,
        frame(0x10, &body),
        m5,
    );
    let mut payload = field(b"w");
    payload.extend_from_slice(&[0x05, 0x11, 0x00, 0x00, 0x00, 0x0A]);
    payload.extend(field(b"w/t"));
    payload.extend(field(b"gone"));
    add(
        "2.2.2.2",
        "will with Session Expiry Interval",
        V5,
        false,
        connect(V5, 0x06, &payload),
        m5,
    );
    cases
}

//! The MQTT data representations (§1.5): integers, variable byte integers,
//! UTF-8 strings and binary data, read from a bounds-checked cursor and written
//! to a [`Sink`] that either counts or writes.
//!
//! Two kinds of UTF-8 string are read and written here. Every string must be
//! well-formed UTF-8 without U+0000 (MQTT 5 [MQTT-1.5.4-1], [MQTT-1.5.4-2];
//! 3.1.1 [MQTT-1.5.3-1], [MQTT-1.5.3-2]). A *name* — a client identifier, a
//! user name, a Topic Name (PUBLISH, will, Response Topic) or a Topic Filter —
//! must in addition hold none of the code points the specification says
//! SHOULD NOT appear and a receiver MAY treat as a Malformed Packet (§1.5.4):
//! the control characters U+0001–U+001F and U+007F–U+009F and the Unicode
//! non-characters (U+FDD0–U+FDEF and the last two code points of every plane,
//! such as U+FFFF). Mosquitto refuses them too; a name is a key, a log field
//! and a level of the topic tree, where a newline or an escape sequence breaks
//! every reader, and a broker that relayed them would get its stricter
//! subscribers disconnected (§5.4.9). Free text — user properties, reason
//! strings, content types — keeps them: an application may need a newline.

use app::names::is_disallowed_in_name;
use bytes::BytesMut;

use super::codec::{DecodeError, EncodeError};

/// Largest value a variable byte integer can carry (four bytes).
pub(crate) const MAX_VARINT: usize = 268_435_455;

pub(crate) const TRUNCATED: DecodeError = DecodeError::Malformed("truncated field");

/// Parses a variable byte integer at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; an encoding longer than four bytes,
/// or one that is not the shortest possible [MQTT-1.5.5-1], is malformed.
pub(crate) fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer not in its shortest form [MQTT-1.5.5-1]",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}

/// Bytes needed to encode `value` as a variable byte integer.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A forward-only cursor over one packet's bytes. Every read is checked
/// against what is present; running out is a Malformed Packet.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    consumed: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            rest: buf,
            consumed: 0,
        }
    }

    /// Bytes read so far.
    pub(crate) fn consumed(&self) -> usize {
        self.consumed
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(TRUNCATED)?;
        self.rest = tail;
        self.consumed += n;
        Ok(head)
    }

    /// Everything left.
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        let rest = self.rest;
        self.consumed += rest.len();
        self.rest = &[];
        rest
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.take(n)?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| TRUNCATED)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let (value, len) = parse_varint(self.rest)?.ok_or(TRUNCATED)?;
        self.take(len)?;
        Ok(value)
    }

    /// Binary Data (§1.5.6): a two byte length, then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String (§1.5.4): well-formed UTF-8 (which excludes the
    /// surrogates U+D800..U+DFFF) [MQTT-1.5.4-1], without U+0000 [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let s = std::str::from_utf8(self.binary()?)
            .map_err(|_| DecodeError::Malformed("ill-formed UTF-8 string [MQTT-1.5.4-1]"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed(
                "U+0000 in a UTF-8 string [MQTT-1.5.4-2]",
            ));
        }
        Ok(s)
    }

    /// A string that names something (see the module header): a
    /// [`Reader::string`] without control characters or non-characters.
    pub(crate) fn name(&mut self) -> Result<&'a str, DecodeError> {
        let s = self.string()?;
        check_name(s)?;
        Ok(s)
    }
}

/// Refuses a name holding a disallowed code point (§1.5.4), as a Malformed
/// Packet: what the specification lets a receiver call it.
pub(crate) fn check_name(name: &str) -> Result<(), DecodeError> {
    if name.chars().any(is_disallowed_in_name) {
        return Err(DecodeError::Malformed(
            "control character or non-character in a client id, user name or topic (§1.5.4)",
        ));
    }
    Ok(())
}

/// Where encoded bytes go: a counter (to learn lengths first) or a buffer.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, b: u8) {
        self.put(&[b]);
    }

    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
}

/// Counts bytes instead of writing them.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

pub(crate) fn put_varint<S: Sink>(s: &mut S, value: usize) -> Result<(), EncodeError> {
    if value > MAX_VARINT {
        return Err(EncodeError::VarintTooLarge(value));
    }
    let mut v = value;
    loop {
        // Seven bits at a time; the cast keeps the low byte, which is the point.
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        s.put_u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

pub(crate) fn put_binary<S: Sink>(s: &mut S, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(bytes.len()))?;
    s.put_u16(len);
    s.put(bytes);
    Ok(())
}

pub(crate) fn put_string<S: Sink>(s: &mut S, value: &str) -> Result<(), EncodeError> {
    if value.contains('\0') {
        return Err(EncodeError::NulInString);
    }
    put_binary(s, value.as_bytes())
}

/// Writes a name (see the module header), refusing what [`Reader::name`]
/// refuses, so that nothing is sent that a strict peer would close over.
pub(crate) fn put_name<S: Sink>(s: &mut S, value: &str) -> Result<(), EncodeError> {
    if value.contains('\0') {
        return Err(EncodeError::NulInString);
    }
    if value.chars().any(is_disallowed_in_name) {
        return Err(EncodeError::DisallowedInName);
    }
    put_binary(s, value.as_bytes())
}

/// Something that writes itself to a [`Sink`]; used for length-prefixed
/// blocks (property lists), which are counted before they are written.
pub(crate) trait Emit {
    fn emit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// Writes `block` preceded by its length as a variable byte integer.
pub(crate) fn put_prefixed<S: Sink, E: Emit>(s: &mut S, block: &E) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    block.emit(&mut counter)?;
    put_varint(s, counter.0)?;
    block.emit(s)
}

/// A Topic Name (§4.7): at least one character [MQTT-4.7.3-1] and no
/// wildcard characters [MQTT-3.3.2-2].
pub(crate) fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#'])
}

//! The frame format of Marquee's own device protocol: the renderer's exact
//! pixels, as one binary MQTT payload on `{prefix}/frame`.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "MQ"
//! 2       1     version, 1
//! 3       1     pixel format, 0 = RGB888
//! 4       2     width in LEDs, big-endian
//! 6       2     height in LEDs, big-endian
//! 8       4     frame number, big-endian, +1 per frame sent to this device (wraps)
//! 12      w*h*3 pixels, row-major from the top-left, 3 bytes (r, g, b) each
//! ```

use app::render::{Frame, Rgb};

pub const MAGIC: &[u8; 2] = b"MQ";
pub const VERSION: u8 = 1;
pub const RGB888: u8 = 0;
pub const HEADER_LEN: usize = 12;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a Marquee frame (no \"MQ\" header)")]
    NotAFrame,
    #[error("frame version {0} is not supported (1 is)")]
    Version(u8),
    #[error("pixel format {0} is not supported (0, RGB888, is)")]
    Format(u8),
    #[error("a {width}×{height} frame needs {expected} pixel bytes, not {got}")]
    Length {
        width: u16,
        height: u16,
        expected: usize,
        got: usize,
    },
}

/// A frame as it goes over the wire.
pub fn encode(frame: &Frame, number: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + frame.pixels.len() * 3);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(RGB888);
    out.extend_from_slice(&frame.width.to_be_bytes());
    out.extend_from_slice(&frame.height.to_be_bytes());
    out.extend_from_slice(&number.to_be_bytes());
    for pixel in &frame.pixels {
        out.extend_from_slice(&[pixel.r, pixel.g, pixel.b]);
    }
    out
}

/// A received frame and its number. The background is not sent; it is black.
pub fn decode(bytes: &[u8]) -> Result<(Frame, u32), FrameError> {
    let header = bytes.get(..HEADER_LEN).ok_or(FrameError::NotAFrame)?;
    let field = |at: usize| header.get(at).copied().unwrap_or(0);
    if header.get(..2) != Some(MAGIC.as_slice()) {
        return Err(FrameError::NotAFrame);
    }
    if field(2) != VERSION {
        return Err(FrameError::Version(field(2)));
    }
    if field(3) != RGB888 {
        return Err(FrameError::Format(field(3)));
    }
    let width = u16::from_be_bytes([field(4), field(5)]);
    let height = u16::from_be_bytes([field(6), field(7)]);
    let number = u32::from_be_bytes([field(8), field(9), field(10), field(11)]);
    let pixels = bytes.get(HEADER_LEN..).unwrap_or_default();
    let expected = usize::from(width) * usize::from(height) * 3;
    if pixels.len() != expected {
        return Err(FrameError::Length {
            width,
            height,
            expected,
            got: pixels.len(),
        });
    }
    let mut frame = Frame::new(width, height, Rgb::BLACK);
    frame.pixels = pixels
        .chunks_exact(3)
        .map(|p| match p {
            [r, g, b] => Rgb::new(*r, *g, *b),
            _ => Rgb::BLACK,
        })
        .collect();
    Ok((frame, number))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_comes_back_as_it_went() {
        let mut frame = Frame::new(3, 2, Rgb::BLACK);
        frame.pixels[4] = Rgb::new(1, 2, 3);
        let bytes = encode(&frame, 7);
        assert_eq!(bytes.len(), HEADER_LEN + 18);
        assert_eq!(decode(&bytes).unwrap(), (frame, 7));
    }

    #[test]
    fn bad_frames_are_refused_without_panicking() {
        assert_eq!(decode(b""), Err(FrameError::NotAFrame));
        assert_eq!(
            decode(b"XX\x01\x00\0\x01\0\x01\0\0\0\0"),
            Err(FrameError::NotAFrame)
        );
        assert_eq!(
            decode(b"MQ\x02\x00\0\x01\0\x01\0\0\0\0"),
            Err(FrameError::Version(2))
        );
        assert!(matches!(
            decode(b"MQ\x01\x00\xff\xff\xff\xff\0\0\0\0\x01"),
            Err(FrameError::Length { .. })
        ));
    }
}

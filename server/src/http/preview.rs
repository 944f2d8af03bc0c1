//! `GET /api/signs/{id}/preview.png`: a picture of what a sign shows right now, drawn by
//! the same renderer the browser uses, for places that cannot run the web app (chat
//! messages, dashboards, a quick look with `curl`).
//!
//! Each LED is a round dot on a dark face, [`PITCH`] pixels apart. Unlit LEDs stay faintly
//! visible, as on a real sign, so the picture shows the matrix and not just the text.

use app::render::{Frame, Rgb, led_color, render};
use app::sign::{Message, Sign};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::rest::ApiPath;
use super::{ApiError, AppState, Caller, authorize, record_topic};
use crate::access::Action;
use crate::clock;
use crate::metrics::Protocol;
use crate::store::{MESSAGES_TABLE, SIGNS_TABLE, StoreError};

/// Pixels across one LED's dot.
pub const DOT: u32 = 4;
/// Pixels from one LED to the next: the dot and a one-pixel gap.
pub const PITCH: u32 = DOT + 1;
/// The sign's face, between and around the dots: darker than any unlit LED.
pub const FACE: Rgb = Rgb::new(0x0c, 0x0c, 0x0c);

pub async fn preview(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.metrics.message_in(Protocol::Rest);
    authorize(
        &state,
        &who,
        Action::Subscribe,
        &record_topic(SIGNS_TABLE, &id),
    )?;
    let record =
        state.store.get(SIGNS_TABLE, &id).await?.ok_or_else(|| {
            ApiError::not_found(format!("there is no record '{SIGNS_TABLE}/{id}'"))
        })?;
    let sign = Sign::from_json(&record.value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mut started = clock::parse_millis(&record.ts);
    let mut message = Message::default();
    // A message the caller may not read shows nothing, like a missing one.
    if let Some(message_id) = sign.shows.current_message()
        && state.guard.allows(
            &who,
            Action::Subscribe,
            &record_topic(MESSAGES_TABLE, message_id),
        )
        && let Some(found) = state.store.get(MESSAGES_TABLE, message_id).await?
    {
        // A message that no longer passes its model shows nothing, like a missing one.
        if let Ok(parsed) = Message::from_json(&found.value) {
            message = parsed;
        }
        // Editing the message restarts it, as it does in the browser.
        started = started.max(clock::parse_millis(&found.ts));
    }
    let t_ms = started
        .and_then(|at| u64::try_from(clock::now_millis().saturating_sub(at)).ok())
        .unwrap_or(0);
    let frame = render(&sign, &message, t_ms);
    let unlit = unlit_color(&sign, frame.background);
    let png = tokio::task::spawn_blocking(move || encode(&frame, unlit))
        .await
        .map_err(|e| internal(&e.to_string()))?
        .map_err(|e| internal(&e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/png"),
            // The picture changes as the sign plays; never serve a stale one.
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// An unlit LED: its background lifted by a little of the colour it glows in, so a dark
/// sign still reads as a matrix of LEDs.
pub fn unlit_color(sign: &Sign, background: Rgb) -> Rgb {
    let glow = led_color(sign.color_depth).unwrap_or(Rgb::new(0xc0, 0xc0, 0xc0));
    // The floor keeps every channel above the face, so even a channel the LED colour
    // lacks (amber has no blue) leaves the dot distinguishable from the face.
    let lift = |base: u8, tint: u8| base.saturating_add(tint / 8).max(FACE.r + 8);
    Rgb::new(
        lift(background.r, glow.r),
        lift(background.g, glow.g),
        lift(background.b, glow.b),
    )
}

/// Draws `frame` as dots on the face and encodes it as an 8-bit RGB PNG.
fn encode(frame: &Frame, unlit: Rgb) -> Result<Vec<u8>, png::EncodingError> {
    let width = u32::from(frame.width) * PITCH;
    let height = u32::from(frame.height) * PITCH;
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for py in 0..height {
        for px in 0..width {
            let color = led_at(px, py)
                .and_then(|(x, y)| frame.get(x, y))
                .map_or(
                    FACE,
                    |led| if led == frame.background { unlit } else { led },
                );
            rgb.extend_from_slice(&[color.r, color.g, color.b]);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(out)
}

/// The LED whose dot covers pixel (`px`, `py`), if any: the gap and the corners of each
/// cell are face, which is what makes the dots round.
fn led_at(px: u32, py: u32) -> Option<(u16, u16)> {
    let (dx, dy) = (px % PITCH, py % PITCH);
    if dx >= DOT || dy >= DOT {
        return None;
    }
    // Within a circle of diameter DOT, measured from pixel centres, in half-pixels.
    let offset = |d: u32| (2 * d + 1).abs_diff(DOT);
    let (ox, oy) = (offset(dx), offset(dy));
    if ox * ox + oy * oy > DOT * DOT {
        return None;
    }
    let x = u16::try_from(px / PITCH).ok()?;
    let y = u16::try_from(py / PITCH).ok()?;
    Some((x, y))
}

fn internal(reason: &str) -> ApiError {
    tracing::error!("cannot draw a preview: {reason}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the preview could not be drawn",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_round_and_separated_by_the_face() {
        let row = |y: u32| -> String {
            (0..PITCH * 2)
                .map(|x| if led_at(x, y).is_some() { '#' } else { '.' })
                .collect()
        };
        assert_eq!(row(0), ".##...##..");
        assert_eq!(row(1), "####.####.");
        assert_eq!(row(2), "####.####.");
        assert_eq!(row(3), ".##...##..");
        assert_eq!(row(4), "..........");
        assert_eq!(led_at(PITCH + 1, 1), Some((1, 0)));
    }
}

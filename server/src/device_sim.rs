//! `marquee device-sim`: a Marquee device without hardware. It connects to a
//! Marquee's broker with the credentials from a pairing card, speaks the
//! Marquee device protocol (`devices::marquee`), and draws every frame it
//! receives in the terminal, two LEDs per character cell (the upper half block
//! in the top LED's colour on the bottom LED's colour).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use app::render::Frame;
use clap::Args;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

use crate::devices::frame;

#[derive(Debug, Clone, Args)]
pub struct DeviceSimArgs {
    /// The broker, HOST:PORT, as the pairing card shows it
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "HOST:PORT")]
    pub broker: String,
    /// The device's user name from the pairing card
    #[arg(long, env = "MARQUEE_DEVICE_USERNAME")]
    pub username: Option<String>,
    /// The device's password from the pairing card (or MARQUEE_DEVICE_PASSWORD)
    #[arg(long, env = "MARQUEE_DEVICE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The prefix from the pairing card
    #[arg(long, value_name = "PREFIX")]
    pub prefix: String,
    /// The matrix the device announces, in LEDs
    #[arg(long, default_value_t = 64)]
    pub width: u16,
    #[arg(long, default_value_t = 16)]
    pub height: u16,
    /// Leave after this many frames (default: run until Ctrl-C)
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// Write each frame received to this file as raw RGB bytes, row-major
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// Do not draw frames, only say what arrives
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("--broker must be HOST:PORT, not {0}")]
    Broker(String),
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    #[error("the connection to the broker failed: {0}")]
    Connection(String),
    #[error("cannot write {0}: {1}")]
    Dump(PathBuf, std::io::Error),
}

/// Runs the simulator until it has drawn `--frames` frames (or for ever).
pub async fn run(args: DeviceSimArgs, out: &mut (impl Write + Send)) -> Result<(), SimError> {
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| SimError::Broker(args.broker.clone()))?;
    let prefix = args.prefix.trim_end_matches('/').to_owned();
    let client_id = format!("marquee-sim-{}", std::process::id());
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_clean_session(true);
    // Frames of the largest sign fit: 256 × 64 × 3 bytes and a header.
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    if let (Some(user), Some(password)) = (&args.username, &args.password) {
        options.set_credentials(user.clone(), password.clone());
    }
    options.set_last_will(LastWill::new(
        format!("{prefix}/status"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut events) = AsyncClient::new(options, 16);
    let mut drawn = 0u64;
    loop {
        let event = events.poll().await.map_err(|e| match e {
            rumqttc::ConnectionError::ConnectionRefused(code) => {
                SimError::Refused(format!("{code:?}"))
            }
            other => SimError::Connection(other.to_string()),
        })?;
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                let _ = writeln!(out, "connected; waiting for frames on {prefix}/frame");
                announce(&client, &prefix, &args).await?;
            }
            Event::Incoming(Packet::Publish(publish)) if publish.topic.ends_with("/frame") => {
                match frame::decode(&publish.payload) {
                    Ok((frame, number)) => {
                        drawn += 1;
                        if let Some(path) = &args.dump {
                            std::fs::write(path, rgb_bytes(&frame))
                                .map_err(|e| SimError::Dump(path.clone(), e))?;
                        }
                        if args.quiet {
                            let _ = writeln!(
                                out,
                                "frame {number}: {}×{}, {} LEDs lit",
                                frame.width,
                                frame.height,
                                frame.lit_count()
                            );
                        } else {
                            let _ = write!(out, "\x1b[H\x1b[2J{}", draw(&frame));
                        }
                        let _ = out.flush();
                        if args.frames.is_some_and(|n| drawn >= n) {
                            let _ = client.disconnect().await;
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "not a frame: {e}");
                    }
                }
            }
            _ => {}
        }
    }
}

/// Says hello (again after every reconnect): online, and the matrix size.
async fn announce(
    client: &AsyncClient,
    prefix: &str,
    args: &DeviceSimArgs,
) -> Result<(), SimError> {
    let hello = serde_json::json!({
        "width": args.width,
        "height": args.height,
        "color_depth": "rgb",
        "firmware": concat!("marquee device-sim ", env!("CARGO_PKG_VERSION")),
    });
    let sent = async {
        client
            .subscribe(format!("{prefix}/frame"), QoS::AtMostOnce)
            .await?;
        client
            .publish(format!("{prefix}/status"), QoS::AtLeastOnce, true, "online")
            .await?;
        client
            .publish(
                format!("{prefix}/hello"),
                QoS::AtLeastOnce,
                false,
                hello.to_string(),
            )
            .await
    };
    sent.await.map_err(|e| SimError::Connection(e.to_string()))
}

/// The frame's pixels as raw RGB, row-major.
pub fn rgb_bytes(frame: &Frame) -> Vec<u8> {
    frame.pixels.iter().flat_map(|p| [p.r, p.g, p.b]).collect()
}

/// The frame in coloured half blocks, one text line per two LED rows.
pub fn draw(frame: &Frame) -> String {
    let mut text = String::new();
    for y in (0..frame.height).step_by(2) {
        for x in 0..frame.width {
            let top = frame.get(x, y).unwrap_or_default();
            let bottom = frame.get(x, y + 1).unwrap_or_default();
            text.push_str(&format!(
                "\x1b[38;2;{};{};{}m\x1b[48;2;{};{};{}m▀",
                top.r, top.g, top.b, bottom.r, bottom.g, bottom.b
            ));
        }
        text.push_str("\x1b[0m\n");
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use app::render::Rgb;

    #[test]
    fn two_rows_of_leds_make_one_line_of_half_blocks() {
        let mut frame = Frame::new(2, 3, Rgb::BLACK);
        frame.pixels[0] = Rgb::new(255, 0, 0);
        let text = draw(&frame);
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("\x1b[38;2;255;0;0m\x1b[48;2;0;0;0m▀"));
        assert_eq!(rgb_bytes(&frame).len(), 18);
    }
}

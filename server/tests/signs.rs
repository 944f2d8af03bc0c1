//! Signs and messages as a user meets them over HTTP: records checked against their
//! models (and stored with their defaults), playlists that play by themselves, and PNG
//! previews that show exactly what the renderer draws.

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use app::render::render;
use app::sign::{Message, Sign};
use common::{SseClient, TestServer, WsClient, client, get_json, put};
use serde_json::{Value, json};

/// Pixels from one LED's dot to the next in a preview, as the README documents.
const PITCH: u32 = 5;

#[tokio::test]
async fn signs_are_stored_with_their_defaults_and_bad_fields_are_refused_by_name() {
    let server = TestServer::start().await;
    let (http, url) = (client(), server.url.as_str());

    let created = put(&http, url, "/api/signs/lobby", &json!({"name": "Lobby"})).await;
    assert_eq!(created.status(), 201);
    let (status, sign) = get_json(&http, url, "/api/signs/lobby").await;
    assert_eq!(status, 200);
    assert_eq!(
        sign,
        json!({"name": "Lobby", "width": 64, "height": 16, "color_depth": "mono_amber",
               "brightness": 80, "shows": null})
    );

    let refused = put(
        &http,
        url,
        "/api/signs/lobby",
        &json!({"name": "Lobby", "width": 300}),
    )
    .await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_record");
    assert_eq!(body["error"]["message"], "width: must be between 1 and 256");

    // A patch is judged by the record it would make.
    let refused = http
        .patch(format!("{url}/api/signs/lobby"))
        .json(&json!({"shows": {"playlist": [{"message": "m", "duration": 0}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "shows.playlist[0].duration: must be between 1 and 86400"
    );

    let refused = put(&http, url, "/api/messages/hi", &json!({"txt": "Hi"})).await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("txt: unknown field"), "{message}");

    // WebSocket writes go through the same check.
    let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
    ws.send(
        json!({"type": "put", "req": "1", "table": "signs", "id": "lobby",
                   "value": {"brightness": 101}}),
    )
    .await;
    let reply = ws.reply("1", &mut Vec::new()).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(
        reply["error"]["message"],
        "brightness: must be between 0 and 100"
    );

    // Nothing refused was stored.
    let (_, after) = get_json(&http, url, "/api/signs/lobby").await;
    assert_eq!(after, sign);
    let (status, _) = get_json(&http, url, "/api/messages/hi").await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// The next change on `sse` (skipping nothing: the stream is of one sign), with when it came.
async fn next_change(sse: &mut SseClient) -> (Value, Instant) {
    let event = sse.next().await.expect("a change within 10 s");
    (event.json(), Instant::now())
}

fn position(change: &Value) -> &Value {
    &change["value"]["shows"]["position"]
}

#[tokio::test]
async fn a_playlist_of_two_messages_alternates_at_their_durations() {
    let server = TestServer::start().await;
    let (http, url) = (client(), server.url.as_str());
    // One duration from the message, one from the playlist item.
    put(
        &http,
        url,
        "/api/messages/a",
        &json!({"text": "A", "duration": 1}),
    )
    .await;
    put(
        &http,
        url,
        "/api/messages/b",
        &json!({"text": "B", "duration": 60}),
    )
    .await;

    let mut sse = SseClient::connect(&format!("{url}/api/signs/door"), None).await;
    sse.until_sync().await;
    let playlist = json!({"playlist": [{"message": "a"}, {"message": "b", "duration": 1}]});
    put(&http, url, "/api/signs/door", &json!({"shows": playlist})).await;

    let (first, t0) = next_change(&mut sse).await;
    assert_eq!(first["type"], "put");
    assert_eq!(position(&first), 0);
    let (second, t1) = next_change(&mut sse).await;
    let (third, t2) = next_change(&mut sse).await;
    assert_eq!(
        [position(&second), position(&third)],
        [&json!(1), &json!(0)]
    );
    for change in [&second, &third] {
        assert_eq!(change["origin"], "system");
        // Only the position moves; the playlist itself is left as the user wrote it.
        assert_eq!(change["value"]["shows"]["playlist"], playlist["playlist"]);
    }
    for (from, to) in [(t0, t1), (t1, t2)] {
        let gap = to - from;
        assert!(
            gap >= Duration::from_millis(700) && gap <= Duration::from_millis(2500),
            "an item was up for {gap:?}, not about 1 s"
        );
    }

    // Switching the sign to one message stops the playlist.
    put(
        &http,
        url,
        "/api/signs/door",
        &json!({"shows": {"message": "a"}}),
    )
    .await;
    let (single, _) = next_change(&mut sse).await;
    assert_eq!(single["value"]["shows"], json!({"message": "a"}));
    assert!(
        sse.next_within(Duration::from_millis(2500)).await.is_none(),
        "the player kept writing a sign that no longer has a playlist"
    );
    server.stop().await;
}

#[tokio::test]
async fn after_a_restart_the_playlist_goes_on_from_where_it_was() {
    let mut first = TestServer::start().await;
    let (http, url) = (client(), first.url.clone());
    for id in ["x", "y", "z"] {
        put(
            &http,
            &url,
            &format!("/api/messages/{id}"),
            &json!({"text": id}),
        )
        .await;
    }
    let shows = json!({"playlist": [{"message": "x", "duration": 60},
                                    {"message": "y", "duration": 3},
                                    {"message": "z", "duration": 60}],
                       "position": 1});
    put(&http, &url, "/api/signs/hall", &json!({"shows": shows})).await;
    if let Some(server) = first.server.take() {
        server.shutdown().await;
    }

    let data_dir = first.dir.path().join("data");
    let second = TestServer::start_with(|config| config.data_dir = data_dir).await;
    let mut sse = SseClient::connect(&format!("{}/api/signs/hall", second.url), None).await;
    let state = sse.until_sync().await;
    let resumed = state.first().map(|e| e.json()).unwrap_or_default();
    assert_eq!(position(&resumed), 1, "the restart lost the position");
    // y's time runs out (3 s from when it came up at most): on to z, not back to x.
    let (next, _) = next_change(&mut sse).await;
    assert_eq!(position(&next), 2);
    second.stop().await;
}

/// A decoded preview: width, height and RGB bytes.
struct Picture {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Picture {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * self.width + x) * 3) as usize;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }

    /// The colour at the middle of LED (x, y)'s dot.
    fn led(&self, x: u16, y: u16) -> [u8; 3] {
        self.pixel(u32::from(x) * PITCH + 1, u32::from(y) * PITCH + 1)
    }
}

async fn preview(http: &reqwest::Client, url: &str, id: &str) -> Picture {
    let response = http
        .get(format!("{url}/api/signs/{id}/preview.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let bytes = response.bytes().await.unwrap();
    let mut reader = png::Decoder::new(Cursor::new(bytes.to_vec()))
        .read_info()
        .expect("a PNG");
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut rgb).expect("a PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    rgb.truncate(info.buffer_size());
    Picture {
        width: info.width,
        height: info.height,
        rgb,
    }
}

#[tokio::test]
async fn a_preview_lights_exactly_the_leds_the_renderer_lights() {
    let server = TestServer::start().await;
    let (http, url) = (client(), server.url.as_str());
    let message = json!({"text": "I"});
    let sign = json!({"name": "Preview", "width": 40, "height": 12, "shows": {"message": "i"}});
    put(&http, url, "/api/messages/i", &message).await;
    put(&http, url, "/api/signs/p", &sign).await;

    let picture = preview(&http, url, "p").await;
    assert_eq!((picture.width, picture.height), (40 * PITCH, 12 * PITCH));
    let frame = render(
        &Sign::from_json(&sign).unwrap(),
        &Message::from_json(&message).unwrap(),
        0,
    );
    assert!(frame.lit_count() > 0, "the renderer draws an I");
    let face = picture.pixel(PITCH - 1, PITCH - 1);
    let mut unlit = Vec::new();
    for y in 0..frame.height {
        for x in 0..frame.width {
            let led = frame.get(x, y).unwrap();
            let drawn = picture.led(x, y);
            if led == frame.background {
                unlit.push(drawn);
            } else {
                assert_eq!(drawn, [led.r, led.g, led.b], "LED ({x}, {y}) is lit");
            }
        }
    }
    // Unlit LEDs are one dim colour, still visible against the face.
    assert!(unlit.iter().all(|c| *c == unlit[0]));
    assert_ne!(unlit[0], face);
    let lit = frame
        .pixels
        .iter()
        .find(|p| **p != frame.background)
        .unwrap();
    assert_ne!(unlit[0], [lit.r, lit.g, lit.b]);

    // A sign showing nothing is a dark matrix: every dot unlit.
    put(&http, url, "/api/signs/dark", &json!({"name": "Dark"})).await;
    let dark = preview(&http, url, "dark").await;
    assert_eq!((dark.width, dark.height), (64 * PITCH, 16 * PITCH));
    for y in 0..16 {
        for x in 0..64 {
            assert_eq!(dark.led(x, y), unlit[0], "LED ({x}, {y}) of a dark sign");
        }
    }

    let (status, body) = get_json(&http, url, "/api/signs/nowhere/preview.png").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // The preview route does not hide the other record paths.
    let published = http
        .post(format!("{url}/api/signs/p/publish"))
        .json(&json!({"flash": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202);
    server.stop().await;
}

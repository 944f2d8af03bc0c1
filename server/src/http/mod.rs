//! The HTTP side: REST, Server-Sent Events and WebSockets over the same
//! records, plus `/healthz`, `/metrics` and the web app itself.

mod accounts;
mod auth;
mod devices;
mod error;
mod limit;
mod poll_again;
mod preview;
mod rest;
mod serve;
mod sse;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, StatusCode, header};
use axum::routing::{MethodRouter, get};
use leptos::prelude::LeptosOptions;
use leptos_axum::{LeptosRoutes, generate_route_list};
use serde_json::Value;
use tokio::sync::watch;

pub use auth::{Caller, authorize, signed_in};
pub use error::ApiError;
pub use limit::{LimitedListener, Peer};
pub use serve::serve;

use crate::access::Action;
use crate::auth::{Guard, Principal};
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach. One `Arc`: axum clones the state for
/// every request (and again for each `State` extractor), and a clone of the
/// fields themselves was a dozen reference counts up and down.
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    pub fn new(shared: AppShared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct AppShared {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Largest request body (and WebSocket message) accepted, in bytes.
    pub body_limit: usize,
    /// Flips to `true` when the server begins shutting down; streams end then.
    pub shutdown: watch::Receiver<bool>,
    /// Stream tasks are spawned here, so shutdown can wait for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// Accounts, tokens, and the access policy MQTT uses too.
    pub guard: Guard,
    /// Pairs devices (their accounts and cards).
    pub devices: crate::devices::Devices,
}

/// The origins a browser uses for pages served from `addr`: the address
/// itself, and `localhost` for a loopback or unspecified address.
pub fn own_origins(addr: std::net::SocketAddr) -> Vec<String> {
    let port = addr.port();
    let ip = addr.ip();
    let mut origins = Vec::new();
    if !ip.is_unspecified() {
        origins.push(format!("http://{addr}"));
    }
    if ip.is_loopback() || ip.is_unspecified() {
        origins.push(format!("http://localhost:{port}"));
        origins.push(format!("http://127.0.0.1:{port}"));
        origins.push(format!("http://[::1]:{port}"));
    }
    origins.sort();
    origins.dedup();
    origins
}

/// Whether a change may be delivered to `who`'s stream.
pub fn may_receive(state: &AppState, who: &Principal, change: &app::event::ChangeEvent) -> bool {
    state.guard.allows(
        who,
        Action::Subscribe,
        &record_topic(&change.table, &change.id),
    )
}

/// The MQTT topic of a record: `{table}/{id}`, or for the `mqtt` table the id itself.
pub fn record_topic(table: &str, id: &str) -> String {
    if table == crate::store::MQTT_TABLE {
        id.to_owned()
    } else {
        format!("{table}/{id}")
    }
}

/// The 403 `bad_host` answer to a request whose `Host` does not name this
/// server, on a loopback listener (see [`Guard::host_allowed`]); `None` lets
/// it through. Asked by the accept loop (`serve`) before routing, rather
/// than by a middleware layer, which boxed and cloned every route's service
/// for every request.
pub fn host_refusal<B>(guard: &Guard, request: &axum::http::Request<B>) -> Option<Response<Body>> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if host.is_none_or(|host| guard.host_allowed(host)) {
        return None;
    }
    Some(axum::response::IntoResponse::into_response(ApiError::new(
        StatusCode::FORBIDDEN,
        "bad_host",
        "this server does not answer to that host name (set public_url or allowed_origins)",
    )))
}

/// Every route: the API under `/api`, health and metrics, then the web app.
pub fn router(state: AppState, leptos_options: LeptosOptions) -> Router {
    let api = Router::new()
        .route(
            "/_tables",
            only(get(rest::list_tables).post(rest::declare_table)),
        )
        .route(
            "/_tables/{name}",
            only(get(rest::get_table).delete(rest::drop_table)),
        )
        .route("/changes", only(get(rest::changes)))
        .route("/auth/login", only(axum::routing::post(auth::login)))
        .route("/auth/logout", only(axum::routing::post(auth::logout)))
        .route("/auth/me", only(get(auth::me)))
        .route("/auth/password", only(axum::routing::post(auth::password)))
        .route("/auth/setup", only(axum::routing::post(auth::setup)))
        .route("/audit", only(get(accounts::audit_log)))
        .route(
            "/accounts",
            only(get(accounts::list).post(accounts::create)),
        )
        .route(
            "/accounts/",
            only(get(accounts::list).post(accounts::create)),
        )
        .route(
            "/accounts/{name}",
            only(
                get(accounts::get)
                    .patch(accounts::update)
                    .delete(accounts::delete),
            ),
        )
        .route(
            "/accounts/{name}/password",
            only(axum::routing::post(accounts::reset_password)),
        )
        .route(
            "/tokens",
            only(get(accounts::list_tokens).post(accounts::create_token)),
        )
        .route(
            "/tokens/",
            only(get(accounts::list_tokens).post(accounts::create_token)),
        )
        .route(
            "/tokens/{id}",
            only(axum::routing::delete(accounts::revoke_token)),
        )
        .route("/ws", only(get(ws::multiplexed)))
        // A literal path: the router prefers it to `/{table}/{id}/...`, whatever the order.
        .route("/signs/{id}/preview.png", only(get(preview::preview)))
        .route(
            "/devices/{id}/password",
            only(axum::routing::post(devices::regenerate)),
        )
        .route("/devices/{id}/pairing", only(get(devices::pairing)))
        .route("/{table}", collection())
        .route("/{table}/", collection())
        .route(
            "/{table}/{id}",
            only(
                get(rest::get_record)
                    .put(rest::put_record)
                    .patch(rest::patch_record)
                    .delete(rest::delete_record),
            ),
        )
        .route(
            "/{table}/{id}/publish",
            only(axum::routing::post(rest::publish)),
        )
        .fallback(unknown_api_path);
    let service = Router::new()
        .route("/healthz", only(get(rest::health)))
        .route("/metrics", only(get(rest::metrics)))
        .nest("/api", api)
        .with_state(state);

    let routes = generate_route_list(app::App);
    let site = Router::new()
        .leptos_routes(&leptos_options, routes, {
            let options = leptos_options.clone();
            move || app::shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler(app::shell))
        .with_state(leptos_options);

    service.merge(site)
}

fn collection() -> MethodRouter<AppState> {
    only(
        get(rest::list_records)
            .post(rest::create_record)
            .delete(rest::delete_collection),
    )
}

/// Answers methods a path does not support with a JSON 405.
fn only(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(|method: Method| async move {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not supported here"),
        )
    })
}

async fn unknown_api_path() -> ApiError {
    ApiError::not_found("no such API path")
}

/// Reads a JSON request body: the media type must be JSON, the size within the
/// limit, the text well-formed.
pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    patch: bool,
) -> Result<Value, ApiError> {
    // Compared without case rather than lowercased into a new String.
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    let accepted = media.is_some_and(|media| {
        media.eq_ignore_ascii_case("application/json")
            || (patch && media.eq_ignore_ascii_case("application/merge-patch+json"))
    });
    if !accepted {
        let expected = if patch {
            "application/json or application/merge-patch+json"
        } else {
            "application/json"
        };
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be {expected}"),
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Whether the client asked for an event stream.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// A WebSocket upgrade with small buffers and messages up to `max_message`.
/// tungstenite's defaults (128 KiB to read and 128 KiB to write, per socket)
/// made an idle socket cost 135 KiB; our messages are small, larger ones are
/// read in several chunks, and each socket's backlog is bounded by its queue.
/// The read buffer is allocated, and zero-filled, for every socket even when
/// it is quiet: 1 KiB, like an MQTT connection's, holds a typical message (a
/// longer frame gets a buffer of its whole length while it is read).
pub fn lean_websocket(
    upgrade: axum::extract::ws::WebSocketUpgrade,
    max_message: usize,
) -> axum::extract::ws::WebSocketUpgrade {
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// Whether the request is a WebSocket upgrade.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Parses `If-Match` / `If-None-Match` (RFC 9110 §13.1): `*`, or a list of
/// entity tags. Our ETags are record versions (`"7"`); a tag of any other form
/// is kept as one that can match nothing, so it fails the precondition (412)
/// rather than being a bad request.
pub fn parse_version_header(
    headers: &HeaderMap,
    name: header::HeaderName,
) -> Result<Option<Precondition>, ApiError> {
    let mut tags = Vec::new();
    let mut any = false;
    for raw in headers.get_all(&name) {
        let text = raw
            .to_str()
            .map_err(|_| ApiError::bad_request(format!("{name} is not readable text")))?;
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                any = true;
                continue;
            }
            let (weak, opaque) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let version = opaque
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<u64>().ok());
            tags.push(EntityTag { version, weak });
        }
    }
    Ok(if any {
        Some(Precondition::Any)
    } else if tags.is_empty() {
        None
    } else {
        Some(Precondition::Tags(tags))
    })
}

/// A parsed `If-Match` / `If-None-Match` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    Any,
    Tags(Vec<EntityTag>),
}

/// One entity tag of a precondition; `version` is `None` for a tag that is
/// not one of ours (it matches no record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityTag {
    pub version: Option<u64>,
    pub weak: bool,
}

impl Precondition {
    /// `If-Match`: strong comparison, so a weak tag never matches.
    pub fn strong_match(&self, version: u64) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Tags(tags) => tags.iter().any(|t| !t.weak && t.version == Some(version)),
        }
    }

    /// `If-None-Match`: weak comparison.
    pub fn weak_match(&self, version: u64) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Tags(tags) => tags.iter().any(|t| t.version == Some(version)),
        }
    }

    /// The versions a strong comparison can match.
    pub fn strong_versions(&self) -> Vec<u64> {
        match self {
            Precondition::Any => Vec::new(),
            Precondition::Tags(tags) => tags
                .iter()
                .filter(|t| !t.weak)
                .filter_map(|t| t.version)
                .collect(),
        }
    }
}

/// The ETag for a record version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

pub use crate::shutdown::stopped;

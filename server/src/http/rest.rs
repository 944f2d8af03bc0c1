//! REST over records and tables: `/api/{table}/{id}`, `/api/{table}/`,
//! `/api/_tables`, `/api/changes`, plus health and metrics. GETs that ask for
//! an event stream or a WebSocket are handed to `sse` and `ws`.

use std::collections::HashMap;

use app::event::{ChangeEvent, Origin, TableList};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::limit::Peer;
use super::{
    ApiError, AppState, Precondition, etag, is_websocket, parse_version_header, read_json, sse,
    wants_event_stream, ws,
};
use super::{Caller, authorize, record_topic};
use crate::access::Action;
use crate::auth::{Principal, Role};
use crate::feed::Start;
use crate::metrics::Protocol;
use crate::store::{DEVICES_TABLE, MAX_PAGE, TableDecl, WriteOp};
use crate::topic::TopicFilter;

/// Path parameters, with a JSON error when they cannot be read.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Query parameters, with a JSON error when they cannot be read.
pub struct ApiQuery(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

impl ApiQuery {
    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("?{name}= must be a non-negative integer"))
                })
            })
            .transpose()
    }
}

/// `GET /api/changes`: a page of the change log; pass `next` as `since` to go on.
#[derive(serde::Serialize)]
struct ChangePage {
    changes: Vec<ChangeEvent>,
    next: u64,
    last_seq: u64,
}

pub async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "last_seq": state.store.last_seq()}))
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .render(state.store.last_seq(), state.store.bus().subscriber_count());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /api/_tables`: every signed-in account that may read records.
pub async fn list_tables(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<TableList>, ApiError> {
    may_see_tables(&state, &who)?;
    Ok(Json(TableList {
        tables: state.store.tables(),
    }))
}

/// Table declarations are no secret to whoever may read some record; they
/// are changed by admins only.
fn may_see_tables(state: &AppState, who: &Principal) -> Result<(), ApiError> {
    if matches!(who.role, Some(Role::Admin | Role::Editor | Role::Viewer))
        || state.guard.access().mode == crate::access::Mode::Open
    {
        return Ok(());
    }
    authorize(state, who, Action::Manage, "")
}

pub async fn declare_table(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(&state, &who, Action::Manage, "")?;
    let body = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    let decl: TableDecl = serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_table",
            format!("not a table declaration: {e}"),
        )
    })?;
    let info = state.store.declare_table(decl).await?;
    let location = format!("/api/_tables/{}", info.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(info),
    )
        .into_response())
}

pub async fn get_table(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    may_see_tables(&state, &who)?;
    state
        .store
        .table_info(&name)
        .map(|info| Json(info).into_response())
        .ok_or_else(|| ApiError::not_found(format!("there is no table named '{name}'")))
}

/// Removing a table takes its name twice (`?confirm={name}`) and only works once it is empty.
pub async fn drop_table(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    query: ApiQuery,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &who, Action::Manage, "")?;
    if query.0.get("confirm") != Some(&name) {
        return Err(ApiError::bad_request(format!(
            "to remove a table, repeat its name: DELETE /api/_tables/{name}?confirm={name}"
        )));
    }
    state.store.drop_table(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/changes?since=`: the change log, with only the changes the
/// caller may read (the page still advances past the others).
pub async fn changes(
    State(state): State<AppState>,
    Caller(who): Caller,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    super::auth::signed_in_or_open(&state, &who)?;
    let since = query.number("since")?.unwrap_or(0);
    let limit = query.number("limit")?.map_or(MAX_PAGE, |l| l as usize);
    let (mut changes, next) = state.store.changes_since(since, None, limit).await?;
    changes.retain(|c| super::may_receive(&state, &who, c));
    let last_seq = state.store.last_seq();
    Ok(Json(ChangePage {
        changes,
        next,
        last_seq,
    })
    .into_response())
}

pub async fn list_records(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath(table): ApiPath<String>,
    query: ApiQuery,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    // Judged before the table is looked up: whoever may not read it learns
    // nothing, not even whether it exists.
    authorize(&state, &who, Action::Subscribe, &record_topic(&table, "+"))?;
    state.store.require_table_now(&table).await?;
    let filter = TopicFilter::parse(&format!("{table}/+"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if is_websocket(&headers) {
        let start = start_from(&query, &headers)?;
        return ws::scoped(state, who, request, ws::Scope::Table(table), filter, start).await;
    }
    if wants_event_stream(&headers) {
        let start = start_from(&query, &headers)?;
        return Ok(sse::stream(state, who, filter, start));
    }
    state.metrics.message_in(Protocol::Rest);
    let limit = query.number("limit")?.map_or(100, |l| l as usize);
    let after = query.0.get("after").cloned();
    let page = state.store.list(&table, after, limit).await?;
    Ok(Json(page).into_response())
}

pub async fn get_record(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath((table, id)): ApiPath<(String, String)>,
    query: ApiQuery,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    if is_websocket(&headers) || wants_event_stream(&headers) {
        authorize(&state, &who, Action::Subscribe, &record_topic(&table, &id))?;
        state.store.require_table_now(&table).await?;
        crate::store::validate_record_id(&table, &id)?;
        let filter = TopicFilter::exact(&table, &id);
        let start = start_from(&query, &headers)?;
        if is_websocket(&headers) {
            return ws::scoped(
                state,
                who,
                request,
                ws::Scope::Record(table, id),
                filter,
                start,
            )
            .await;
        }
        return Ok(sse::stream(state, who, filter, start));
    }
    state.metrics.message_in(Protocol::Rest);
    authorize(&state, &who, Action::Subscribe, &record_topic(&table, &id))?;
    let record = state
        .store
        .get(&table, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no record '{table}/{id}'")))?;
    let tag = etag(record.version);
    if let Some(wanted) = parse_version_header(&headers, header::IF_NONE_MATCH)?
        && wanted.weak_match(record.version)
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let mut response = Json(record.value).into_response();
    set_header(&mut response, header::ETAG, &tag);
    set_header(
        &mut response,
        header::HeaderName::from_static("x-marquee-seq"),
        &record.seq.to_string(),
    );
    Ok(response)
}

pub async fn put_record(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath((table, id)): ApiPath<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    state.metrics.message_in(Protocol::Rest);
    authorize(&state, &who, Action::Publish, &record_topic(&table, &id))?;
    // The request's own headers: a `HeaderMap` extractor would clone them.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let value = read_json(headers, body, state.body_limit, false).await?;
    let if_match = write_precondition(&state, &table, &id, headers).await?;
    let op = WriteOp::Put {
        table,
        id: Some(id),
        value,
        if_match,
    };
    let event = state.store.write(op, Origin::Rest).await?;
    Ok(written(&event, false))
}

pub async fn patch_record(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath((table, id)): ApiPath<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    state.metrics.message_in(Protocol::Rest);
    authorize(&state, &who, Action::Publish, &record_topic(&table, &id))?;
    // The request's own headers: a `HeaderMap` extractor would clone them.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let patch = read_json(headers, body, state.body_limit, true).await?;
    let if_match = write_precondition(&state, &table, &id, headers).await?;
    let op = WriteOp::Patch {
        table,
        id,
        patch,
        if_match,
    };
    let event = state.store.write(op, Origin::Rest).await?;
    Ok(written(&event, false))
}

pub async fn delete_record(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath((table, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.metrics.message_in(Protocol::Rest);
    authorize(&state, &who, Action::Publish, &record_topic(&table, &id))?;
    let if_match = write_precondition(&state, &table, &id, &headers).await?;
    let op = WriteOp::Delete {
        table,
        id,
        if_match,
    };
    let event = state.store.write(op, Origin::Rest).await?;
    Ok(written(&event, false))
}

pub async fn create_record(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath(table): ApiPath<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    state.metrics.message_in(Protocol::Rest);
    if table == DEVICES_TABLE {
        // A new device is a pairing: an account and a card come with it.
        let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0);
        let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
        return super::devices::pair(&state, &who, peer, value).await;
    }
    authorize(&state, &who, Action::Publish, &record_topic(&table, "+"))?;
    let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    let op = WriteOp::Put {
        table,
        id: None,
        value,
        if_match: Some(0),
    };
    let event = state.store.write(op, Origin::Rest).await?;
    Ok(written(&event, true))
}

pub async fn delete_collection(ApiPath(table): ApiPath<String>) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "a whole table is not deleted by DELETE on its collection; delete its records, then DELETE /api/_tables/{table}?confirm={table}"
        ),
    )
}

pub async fn publish(
    State(state): State<AppState>,
    Caller(who): Caller,
    ApiPath((table, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    state.metrics.message_in(Protocol::Rest);
    authorize(&state, &who, Action::Publish, &record_topic(&table, &id))?;
    let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    state.store.publish(&table, &id, value, Origin::Rest)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"published": true}))).into_response())
}

/// The version a write must find, from `If-Match` and then `If-None-Match`
/// (RFC 9110 §13.2.2). `If-None-Match` fails (412) when one of its tags is the
/// record's version by weak comparison, `*` when the record exists (so
/// `If-None-Match: *` creates only); otherwise the write is held to the
/// version it was judged against.
async fn write_precondition(
    state: &AppState,
    table: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Option<u64>, ApiError> {
    let held = if_match(state, table, id, headers).await?;
    let Some(unwanted) = parse_version_header(headers, header::IF_NONE_MATCH)? else {
        return Ok(held);
    };
    // Version 0: there is no record.
    let current = match held {
        Some(version) => version,
        None => state.store.get(table, id).await?.map_or(0, |r| r.version),
    };
    if current != 0 && unwanted.weak_match(current) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            format!("'{table}/{id}' is at version {current}, which If-None-Match names"),
        ));
    }
    Ok(Some(current))
}

/// The version a write must find, from `If-Match`; `*` means "whatever version
/// exists now", and a list means "one of these" (checked against the record
/// now, then held by the writer). Tags that can match nothing fail at once.
async fn if_match(
    state: &AppState,
    table: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Option<u64>, ApiError> {
    let Some(wanted) = parse_version_header(headers, header::IF_MATCH)? else {
        return Ok(None);
    };
    let failed =
        |why: String| ApiError::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", why);
    if let [only] = wanted.strong_versions().as_slice() {
        return Ok(Some(*only));
    }
    if wanted != Precondition::Any && wanted.strong_versions().is_empty() {
        return Err(failed(format!(
            "If-Match names no version of '{table}/{id}' (its ETags are like \"3\")"
        )));
    }
    match state.store.get(table, id).await? {
        Some(record) if wanted.strong_match(record.version) => Ok(Some(record.version)),
        Some(record) => Err(failed(format!(
            "'{table}/{id}' is at version {}, which If-Match does not name",
            record.version
        ))),
        None => Err(failed(format!(
            "If-Match was given but there is no record '{table}/{id}'"
        ))),
    }
}

/// Where a stream starts: `Last-Event-ID`, else `?since=`, else the current state.
fn start_from(query: &ApiQuery, headers: &HeaderMap) -> Result<Start, ApiError> {
    if let Some(last) = headers.get("last-event-id") {
        let seq = last
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a seq number"))?;
        return Ok(Start::Since(seq));
    }
    Ok(query.number("since")?.map_or(Start::State, Start::Since))
}

/// Room for a change event's JSON with a small record (a bench PUT's is 170 bytes).
const EVENT_JSON: usize = 256;

/// The answer to a successful write: the change event, its ETag, and for a
/// creation `201` with the record's `Location`.
fn written(event: &ChangeEvent, created_by_post: bool) -> Response {
    let created = created_by_post || event.created;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // Serialized into one buffer of about the right size (`Json` starts
    // from 128 bytes and grows it), with the same 500 when it fails.
    let mut body = Vec::with_capacity(EVENT_JSON);
    if let Err(e) = serde_json::to_writer(&mut body, event) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(version) = event.version
        && event.value.is_some()
        // The String becomes the header's bytes (`from_str` would copy it).
        && let Ok(tag) = HeaderValue::try_from(etag(version))
    {
        response.headers_mut().insert(header::ETAG, tag);
    }
    if created {
        let location = format!("/api/{}/{}", event.table, encode_segment(&event.id));
        set_header(&mut response, header::LOCATION, &location);
    }
    response
}

fn set_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// Percent-encodes a path segment (ids may hold any character but `/`).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

//! Pairing devices over HTTP: `POST /api/devices/` (a create in the devices
//! collection) answers the pairing card with the device's one-time password;
//! `POST /api/devices/{id}/password` makes a new one; `GET
//! /api/devices/{id}/pairing` shows the card again without it. Binding,
//! renaming and removing are plain record writes on `devices/{id}`.

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::auth::{Caller, auth_error, authorize};
use super::limit::Peer;
use super::{ApiError, AppState};
use crate::access::Action;
use crate::auth::Principal;
use crate::devices::{PairError, pair_request};

/// `POST /api/devices/ {"kind","name",…}` (admin): 201 with the pairing card.
pub async fn pair(
    state: &AppState,
    who: &Principal,
    peer: Option<Peer>,
    body: Value,
) -> Result<Response, ApiError> {
    authorize(state, who, Action::Manage, "")?;
    let request = pair_request(body).map_err(pair_error)?;
    let pairing = state.devices.pair(request).await.map_err(pair_error)?;
    state.guard.audit().record(
        who.name(),
        peer.map(|p| p.remote),
        "http",
        "pair_device",
        Some(&pairing.id),
        "ok",
    );
    Ok((StatusCode::CREATED, Json(pairing)).into_response())
}

/// `POST /api/devices/{id}/password` (admin): a new password, shown once; the
/// old one and its connections stop working.
pub async fn regenerate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &who, Action::Manage, "")?;
    let pairing = state.devices.regenerate(&id).await.map_err(pair_error)?;
    state.guard.audit().record(
        who.name(),
        Some(peer.remote),
        "http",
        "regenerate_device_password",
        Some(&id),
        "ok",
    );
    Ok(Json(pairing).into_response())
}

/// `GET /api/devices/{id}/pairing` (admin): the card without the password.
pub async fn pairing(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &who, Action::Manage, "")?;
    let pairing = state.devices.pairing(&id).await.map_err(pair_error)?;
    Ok(Json(pairing).into_response())
}

fn pair_error(e: PairError) -> ApiError {
    match e {
        PairError::Invalid(reason) => ApiError::bad_request(reason),
        PairError::Taken(reason) => ApiError::new(StatusCode::CONFLICT, "conflict", reason),
        PairError::NotFound(id) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no device {id}"),
        ),
        PairError::Auth(e) => auth_error(e),
        PairError::Store(e) => e.into(),
    }
}

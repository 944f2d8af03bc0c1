//! Sign-in over HTTP: `POST /api/auth/login`, `POST /api/auth/logout`,
//! `GET /api/auth/me` and `POST /api/auth/password`. A browser gets a
//! session cookie (`HttpOnly; SameSite=Strict`, a random token stored only
//! as its hash); a script sends `Authorization: Bearer <API token>`.
//!
//! A cookie travels with every request a browser makes, including ones
//! another site starts, so a cookie-authenticated request that changes
//! something must carry an `Origin` that is exactly one of this server's
//! (SECURITY.md §7.5); a bearer token is never sent by itself, so it needs
//! none. The other endpoints do not ask for either yet (issue 9 continues).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::limit::Peer;
use super::{ApiError, AppState, read_json};
use crate::auth::{Account, AuthError, Lifetime, Role, TokenKind, normalize_username};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "marquee_session";

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct PasswordChange {
    current: String,
    new: String,
}

/// Who is signed in, as `me`, `login` and `password` answer.
#[derive(Serialize)]
struct Me<'a> {
    username: &'a str,
    role: &'a str,
}

/// How a request proved who it is.
enum Credential {
    Session(String),
    Bearer(String),
}

/// `POST /api/auth/login {"username","password"}`: 200 with the account and
/// a session cookie; 401 for a wrong user name or password alike; 429 while
/// throttled.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    // Login CSRF: a browser always sends Origin on a POST; another site's must not sign us in.
    check_origin(&state, &headers, false)?;
    let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    let login: Login = serde_json::from_value(value)
        .map_err(|_| ApiError::bad_request("send {\"username\": …, \"password\": …}"))?;
    let account = check_password(&state, peer, &login.username, &login.password).await?;
    if account.role == Role::Device {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "device accounts cannot sign in to the web app",
        ));
    }
    signed_in(&state, &account).await
}

/// `POST /api/auth/logout`: ends this browser's session. 204 whether or not
/// there was one.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(Credential::Session(secret)) = credential(&headers) {
        check_origin(&state, &headers, true)?;
        state
            .tokens
            .revoke_secret(&secret)
            .await
            .map_err(auth_error)?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, "", 0);
    Ok(response)
}

/// `GET /api/auth/me`: the signed-in account, or 401.
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (account, _) = signed_in_account(&state, &headers).await?;
    Ok(axum::Json(Me {
        username: &account.username,
        role: account.role.as_str(),
    })
    .into_response())
}

/// `POST /api/auth/password {"current","new"}`: a new password for the
/// signed-in account. Every session and token it had ends; a browser gets a
/// fresh session.
pub async fn password(
    State(state): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (account, via) = signed_in_account(&state, &headers).await?;
    if matches!(via, Credential::Session(_)) {
        check_origin(&state, &headers, true)?;
    }
    let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    let change: PasswordChange = serde_json::from_value(value)
        .map_err(|_| ApiError::bad_request("send {\"current\": …, \"new\": …}"))?;
    check_password(&state, peer, &account.username, &change.current).await?;
    state
        .accounts
        .set_password(&account.username, &change.new)
        .await
        .map_err(auth_error)?;
    state
        .tokens
        .revoke_all(&account.username)
        .await
        .map_err(auth_error)?;
    match via {
        Credential::Session(_) => signed_in(&state, &account).await,
        Credential::Bearer(_) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The signed-in account of a request; one that `changes` something with
/// the cookie must carry this server's Origin too.
pub(super) async fn acting_account(
    state: &AppState,
    headers: &HeaderMap,
    changes: bool,
) -> Result<Account, ApiError> {
    let (account, via) = signed_in_account(state, headers).await?;
    if changes && matches!(via, Credential::Session(_)) {
        check_origin(state, headers, true)?;
    }
    Ok(account)
}

/// The account behind the request's cookie or bearer token, or 401.
async fn signed_in_account(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Account, Credential), ApiError> {
    let unauthenticated = || {
        let mut error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in, or send an API token as Authorization: Bearer",
        );
        error.www_authenticate = true;
        error
    };
    let Some(credential) = credential(headers) else {
        return Err(unauthenticated());
    };
    let (Credential::Session(secret) | Credential::Bearer(secret)) = &credential;
    let Some(token) = state.tokens.resolve(secret).await.map_err(auth_error)? else {
        return Err(unauthenticated());
    };
    // A session secret is no bearer token and the other way round.
    let usable = matches!(
        (&credential, token.kind),
        (Credential::Session(_), TokenKind::Session) | (Credential::Bearer(_), TokenKind::Api)
    );
    let account = state.accounts.get(&token.username).map_err(auth_error)?;
    match account {
        Some(account) if usable && !account.disabled => Ok((account, credential)),
        _ => Err(unauthenticated()),
    }
}

/// Checks a password under the throttle: the account, or 401 / 429.
async fn check_password(
    state: &AppState,
    peer: SocketAddr,
    username: &str,
    password: &str,
) -> Result<Account, ApiError> {
    // Only a well-formed name is its own throttle key (at most 64 bytes):
    // whatever else a client sends shares one key, so it cannot grow the map.
    let name = normalize_username(username).unwrap_or_default();
    if let Err(wait) = state.throttle.check(&name, peer.ip()) {
        tracing::info!(username = %name, %peer, "sign-in throttled");
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed attempts; try again later",
        );
        error.retry_after = Some(wait.as_secs().max(1));
        return Err(error);
    }
    match state
        .accounts
        .check(&name, password)
        .await
        .map_err(auth_error)?
    {
        Some(account) => {
            state.throttle.succeeded(&name);
            Ok(account)
        }
        None => {
            state.throttle.failed(&name, peer.ip());
            tracing::info!(username = %name, %peer, "sign-in failed");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "invalid username or password",
            ))
        }
    }
}

/// Answers a sign-in: a new session token in the cookie (never the old
/// one: no fixation) and the account.
async fn signed_in(state: &AppState, account: &Account) -> Result<Response, ApiError> {
    let lifetime = Lifetime::SESSION;
    let (secret, _) = state
        .tokens
        .issue(&account.username, TokenKind::Session, None, lifetime)
        .await
        .map_err(auth_error)?;
    let mut response = axum::Json(Me {
        username: &account.username,
        role: account.role.as_str(),
    })
    .into_response();
    let max_age = lifetime.absolute.map_or(0, |d| d.as_secs());
    set_cookie(&mut response, &secret, max_age);
    Ok(response)
}

fn set_cookie(response: &mut Response, value: &str, max_age: u64) {
    let cookie =
        format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The session cookie, else a bearer token.
fn credential(headers: &HeaderMap) -> Option<Credential> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Credential::Bearer(t.trim().to_owned()));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
        .map(Credential::Session);
    cookie.or(bearer)
}

/// `Origin`, when present, must be exactly one of this server's; `required`
/// (a cookie-authenticated change) it must be present too. Never derived
/// from `Host`, which the client chooses.
fn check_origin(state: &AppState, headers: &HeaderMap, required: bool) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let allowed = match origin {
        Some(origin) => state.origins.iter().any(|o| o == origin),
        None => !required,
    };
    if allowed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "bad_origin",
        "this request must come from a page of this server (Origin)",
    ))
}

pub(super) fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Store(e) => e.into(),
        AuthError::LastAdmin => ApiError::new(StatusCode::CONFLICT, "last_admin", e.to_string()),
        AuthError::TooManyTokens => {
            ApiError::new(StatusCode::CONFLICT, "too_many_tokens", e.to_string())
        }
        AuthError::WeakPassword(message) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", message)
        }
        AuthError::BadUsername(message) => ApiError::bad_request(message),
        e => {
            tracing::error!("{e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "auth", e.to_string())
        }
    }
}

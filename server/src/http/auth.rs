//! Sign-in over HTTP and the one question every handler asks: who is
//! calling, and may they? `POST /api/auth/login`, `logout`, `password`,
//! `setup` and `GET /api/auth/me`; the [`Caller`] extractor (session cookie
//! under the Origin rule, or `Authorization: Bearer`); [`authorize`], which
//! answers 401 to the anonymous and 403 to an account the policy refuses.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::limit::Peer;
use super::{ApiError, AppState, is_websocket, read_json};
use crate::access::{Action, Mode};
use crate::auth::{
    Account, AuthError, Lifetime, Presented, Principal, Refusal, RequestRefusal, Role, SetupError,
    TokenKind, presented,
};

/// Who is making a request: the extractor every handler that touches data
/// or accounts takes. A request with an unknown or revoked credential, or
/// with our cookie from a page not ours, is refused here (401 / 403).
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let local = local_addr(parts);
        let acts = !parts.method.is_safe() || is_websocket(&parts.headers);
        state
            .guard
            .principal_for_request(&parts.headers, local, acts)
            .await
            .map(Caller)
            .map_err(|refusal| request_refusal(state, refusal))
    }
}

/// Err unless `who` may do `action` on `topic`: 401 (sign in first, or set
/// up the first admin) for the anonymous, 403 for an account.
pub fn authorize(
    state: &AppState,
    who: &Principal,
    action: Action,
    topic: &str,
) -> Result<(), ApiError> {
    if state.guard.allows(who, action, topic) {
        return Ok(());
    }
    if who.is_anonymous() && state.guard.access().mode == Mode::Accounts {
        return Err(unauthenticated(state));
    }
    let what = match action {
        Action::Publish => format!("write to '{topic}'"),
        Action::Subscribe => format!("read '{topic}'"),
        Action::Manage => "manage tables (admins only)".to_owned(),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("not allowed to {what}"),
    ))
}

/// Err unless a signed-in account (not the anonymous) makes the request.
pub fn signed_in(state: &AppState, who: &Principal) -> Result<(), ApiError> {
    if who.is_anonymous() {
        Err(unauthenticated(state))
    } else {
        Ok(())
    }
}

/// Err (401) for the anonymous where no rule lets them read anything, so
/// they learn to sign in instead of seeing an empty log.
pub fn signed_in_or_open(state: &AppState, who: &Principal) -> Result<(), ApiError> {
    if who.is_anonymous()
        && state.guard.access().mode == crate::access::Mode::Accounts
        && !state.guard.access().admits_anonymous()
    {
        return Err(unauthenticated(state));
    }
    Ok(())
}

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

#[derive(Deserialize)]
struct Setup {
    token: String,
    username: String,
    password: String,
}

/// Who is signed in, as `me`, `login`, `password` and `setup` answer.
#[derive(Serialize)]
struct Me<'a> {
    username: Option<&'a str>,
    role: Option<&'a str>,
    /// `accounts` or `open`.
    mode: &'a str,
}

/// `POST /api/auth/login {"username","password"}`: 200 with the account and
/// a session cookie; 401 for a wrong user name or password alike; 429 while
/// throttled; 403 for a device account.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    // Login CSRF: a browser always sends Origin on a POST; another site's must not sign us in.
    state
        .guard
        .check_origin(&headers, peer.local, false)
        .map_err(|r| request_refusal(&state, r))?;
    let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    let login: Login = serde_json::from_value(value)
        .map_err(|_| ApiError::bad_request("send {\"username\": …, \"password\": …}"))?;
    let account = state
        .guard
        .check_password(&login.username, &login.password, peer.remote, "http")
        .await
        .map_err(|r| refusal(&state, r))?;
    if account.role == Role::Device {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "device accounts cannot sign in to the web app",
        ));
    }
    new_session(&state, &account).await
}

/// `POST /api/auth/logout`: ends this browser's session (its live pages
/// close too). 204 whether or not there was one.
pub async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Presented::Cookie(secret) = presented(&headers) {
        state
            .guard
            .check_origin(&headers, peer.local, true)
            .map_err(|r| request_refusal(&state, r))?;
        state
            .guard
            .tokens()
            .revoke_secret(secret)
            .await
            .map_err(auth_error)?;
        state
            .guard
            .audit()
            .record("-", Some(peer.remote), "http", "sign_out", None, "ok");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&state, &mut response, "", 0);
    Ok(response)
}

/// `GET /api/auth/me`: the signed-in account; 401 `unauthenticated`, or
/// `setup_required` before the first admin exists. In `open` mode the
/// anonymous get 200 with no user name.
pub async fn me(State(state): State<AppState>, Caller(who): Caller) -> Result<Response, ApiError> {
    let open = state.guard.access().mode == Mode::Open;
    if who.is_anonymous() && !open {
        return Err(unauthenticated(&state));
    }
    Ok(axum::Json(Me {
        username: who.username.as_deref().filter(|_| !who.is_anonymous()),
        role: who.role.map(Role::as_str),
        mode: if open { "open" } else { "accounts" },
    })
    .into_response())
}

/// `POST /api/auth/password {"current","new"}`: a new password for the
/// signed-in account. Every session and token it had ends, and so does
/// every live connection; a browser gets a fresh session.
pub async fn password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    signed_in(&state, &who)?;
    let username = who.username.clone().unwrap_or_default();
    let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    let change: PasswordChange = serde_json::from_value(value)
        .map_err(|_| ApiError::bad_request("send {\"current\": …, \"new\": …}"))?;
    state
        .guard
        .check_password(&username, &change.current, peer.remote, "http")
        .await
        .map_err(|r| refusal(&state, r))?;
    state
        .guard
        .accounts()
        .set_password(&username, &change.new)
        .await
        .map_err(auth_error)?;
    state
        .guard
        .tokens()
        .revoke_all(&username)
        .await
        .map_err(auth_error)?;
    state.guard.audit().record(
        &username,
        Some(peer.remote),
        "http",
        "change_password",
        None,
        "ok",
    );
    let account = state
        .guard
        .accounts()
        .get(&username)
        .map_err(auth_error)?
        .ok_or_else(|| unauthenticated(&state))?;
    if matches!(presented(&headers), Presented::Cookie(_)) {
        new_session(&state, &account).await
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// `POST /api/auth/setup {"token","username","password"}`: creates the first
/// admin with the one-time link's token (printed at start) and signs in.
/// 201; 403 `bad_setup_token`; 409 `setup_done` once an admin exists.
pub async fn setup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    state
        .guard
        .check_origin(&headers, peer.local, false)
        .map_err(|r| request_refusal(&state, r))?;
    let value = read_json(&headers, request.into_body(), state.body_limit, false).await?;
    let setup: Setup = serde_json::from_value(value).map_err(|_| {
        ApiError::bad_request("send {\"token\": …, \"username\": …, \"password\": …}")
    })?;
    let account = state
        .guard
        .finish_setup(&setup.token, &setup.username, &setup.password, peer.remote)
        .await
        .map_err(|e| match e {
            SetupError::BadLink => {
                ApiError::new(StatusCode::FORBIDDEN, "bad_setup_token", e.to_string())
            }
            SetupError::Done => ApiError::new(StatusCode::CONFLICT, "setup_done", e.to_string()),
            SetupError::Throttled(wait) => throttled(wait),
            SetupError::Auth(e) => auth_error(e),
        })?;
    let mut response = new_session(&state, &account).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Answers a sign-in: a new session token in the cookie (never the old
/// one: no fixation) and the account.
async fn new_session(state: &AppState, account: &Account) -> Result<Response, ApiError> {
    let lifetime = Lifetime::SESSION;
    let (secret, _) = state
        .guard
        .tokens()
        .issue(&account.username, TokenKind::Session, None, lifetime)
        .await
        .map_err(auth_error)?;
    let mut response = axum::Json(Me {
        username: Some(&account.username),
        role: Some(account.role.as_str()),
        mode: match state.guard.access().mode {
            Mode::Open => "open",
            Mode::Accounts => "accounts",
        },
    })
    .into_response();
    let max_age = lifetime.absolute.map_or(0, |d| d.as_secs());
    set_cookie(state, &mut response, &secret, max_age);
    Ok(response)
}

fn set_cookie(state: &AppState, response: &mut Response, value: &str, max_age: u64) {
    let name = state.guard.cookie_name();
    let secure = if state.guard.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn local_addr(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .and_then(|info| info.0.local)
}

/// 401: sign in (or, before the first admin exists, set up).
pub fn unauthenticated(state: &AppState) -> ApiError {
    if state.guard.setup_required() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "setup_required",
            "no admin account exists yet: open the setup link Marquee printed at start",
        );
    }
    let mut error = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "sign in, or send an API token as Authorization: Bearer",
    );
    error.www_authenticate = true;
    error
}

fn throttled(wait: std::time::Duration) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        "too many failed attempts; try again later",
    );
    error.retry_after = Some(wait.as_secs().max(1));
    error
}

/// The answer for a credential the guard did not accept.
pub fn refusal(state: &AppState, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::BadCredentials => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "invalid username or password",
        ),
        Refusal::NotAuthorized => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this account may not sign in",
        ),
        Refusal::SetupRequired => unauthenticated(state),
        Refusal::Throttled(wait) => throttled(wait),
        Refusal::Internal(e) => auth_error(e),
    }
}

/// The answer for a request whose credential or Origin was refused.
pub fn request_refusal(state: &AppState, refusal: RequestRefusal) -> ApiError {
    match refusal {
        RequestRefusal::Unauthenticated if state.guard.setup_required() => unauthenticated(state),
        RequestRefusal::Unauthenticated => {
            let mut error = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the session or token is not valid (expired, revoked or unknown); sign in again",
            );
            error.www_authenticate = true;
            error
        }
        RequestRefusal::BadOrigin => ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "this request must come from a page of this server (Origin)",
        ),
        RequestRefusal::Internal(e) => auth_error(e),
    }
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

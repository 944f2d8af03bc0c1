//! Managing accounts and API tokens over HTTP (SECURITY.md §7.8):
//! `/api/accounts` for admins, `/api/tokens` for everyone signed in (their
//! own; admins see and revoke all). Passwords and token secrets appear in
//! an answer only when they were just made, and hashes never.

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Caller, auth_error, signed_in};
use super::limit::Peer;
use super::{ApiError, AppState, read_json};
use crate::auth::{
    Account, Lifetime, Principal, Role, Token, TokenId, TokenKind, Tokens, generate_password,
};
use crate::clock;

/// An account as the API shows it.
#[derive(Serialize)]
struct AccountView<'a> {
    username: &'a str,
    role: &'a str,
    disabled: bool,
    created: String,
    changed: String,
    /// A generated password, in the answer that made it only.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

/// An API token as the API shows it: never its secret.
#[derive(Serialize)]
struct TokenView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    username: &'a str,
    created: String,
    /// `null` until first used.
    last_used: Option<String>,
    /// The secret, in the answer that made it only.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    username: String,
    role: Role,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountChange {
    role: Option<Role>,
    disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    /// Admins: every account's tokens, not only their own.
    #[serde(default)]
    all: bool,
}

/// Longest token name, in characters.
const MAX_TOKEN_NAME: usize = 100;

/// `GET /api/accounts` (admin).
pub async fn list(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    admin(&state, &who)?;
    let accounts = state.guard.accounts().list().map_err(auth_error)?;
    let views: Vec<AccountView> = accounts.iter().map(view).collect();
    Ok(Json(json!({ "items": views })).into_response())
}

/// `POST /api/accounts {"username","role","password"?}` (admin): 201; a
/// password is generated, and shown in this answer only, when none is given.
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    admin(&state, &who)?;
    let new: NewAccount = body(&state, &headers, request).await?;
    let (password, generated) = password_or_generated(new.password)?;
    let account = state
        .guard
        .accounts()
        .create(&new.username, new.role, &password)
        .await
        .map_err(auth_error)?;
    audit(&state, &who, peer, "create_account", &account.username);
    let answer = AccountView {
        password: generated.then_some(password.as_str()),
        ..view(&account)
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /api/accounts/{name}` (admin).
pub async fn get(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin(&state, &who)?;
    let account = state.guard.accounts().get(&name).map_err(auth_error)?;
    match account {
        Some(account) => Ok(Json(view(&account)).into_response()),
        None => Err(no_such_account(&name)),
    }
}

/// `PATCH /api/accounts/{name} {"role"?, "disabled"?}` (admin). A new role
/// or a disabled account ends its sessions and tokens.
pub async fn update(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    admin(&state, &who)?;
    let change: AccountChange = body(&state, &headers, request).await?;
    let (account, access_changed) = state
        .guard
        .accounts()
        .update(&name, change.role, change.disabled)
        .await
        .map_err(auth_error)?;
    if access_changed {
        end_sessions(&state, &account.username).await?;
    }
    audit(&state, &who, peer, "update_account", &account.username);
    Ok(Json(view(&account)).into_response())
}

/// `POST /api/accounts/{name}/password {"password"?}` (admin): sets (or
/// generates and shows once) a new password; its sessions and tokens end.
pub async fn reset_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    admin(&state, &who)?;
    let new: NewPassword = body(&state, &headers, request).await?;
    let (password, generated) = password_or_generated(new.password)?;
    let username = state
        .guard
        .accounts()
        .set_password(&name, &password)
        .await
        .map_err(auth_error)?;
    end_sessions(&state, &username).await?;
    audit(&state, &who, peer, "reset_password", &username);
    let answer = if generated {
        json!({ "username": username, "password": password })
    } else {
        json!({ "username": username })
    };
    Ok(Json(answer).into_response())
}

/// `DELETE /api/accounts/{name}` (admin): 204; its sessions and tokens end.
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin(&state, &who)?;
    let username = state
        .guard
        .accounts()
        .delete(&name)
        .await
        .map_err(auth_error)?;
    end_sessions(&state, &username).await?;
    audit(&state, &who, peer, "delete_account", &username);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/tokens[?all=true]`: your API tokens (admins: `all`, everyone's).
pub async fn list_tokens(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(query): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let username = own_name(&state, &who)?;
    let whose = if query.all && who.is_admin() {
        None
    } else {
        Some(username)
    };
    let tokens = state.guard.tokens().list(whose).map_err(auth_error)?;
    let views: Vec<TokenView> = tokens
        .iter()
        .filter(|(_, t)| t.kind == TokenKind::Api)
        .map(|(id, t)| token_view(id, t))
        .collect();
    Ok(Json(json!({ "items": views })).into_response())
}

/// `POST /api/tokens {"name"}`: 201 with the token's secret, shown this once.
pub async fn create_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let username = own_name(&state, &who)?;
    let new: NewToken = body(&state, &headers, request).await?;
    let name = new.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_TOKEN_NAME
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "a token name is 1–{MAX_TOKEN_NAME} characters"
        )));
    }
    let (secret, token) = state
        .guard
        .tokens()
        .issue(
            username,
            TokenKind::Api,
            Some(name.to_owned()),
            Lifetime::API,
        )
        .await
        .map_err(auth_error)?;
    let id = Tokens::id_of(&secret);
    audit(&state, &who, peer, "create_token", name);
    let answer = TokenView {
        token: Some(&secret),
        ..token_view(&id, &token)
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /api/tokens/{id}`: revokes one of your tokens (admins: anyone's).
pub async fn revoke_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Caller(who): Caller,
    Path(id): Path<TokenId>,
) -> Result<Response, ApiError> {
    let username = own_name(&state, &who)?;
    let whose = (!who.is_admin()).then_some(username);
    let owned = state
        .guard
        .tokens()
        .list(whose)
        .map_err(auth_error)?
        .into_iter()
        .any(|(token_id, t)| token_id == id && t.kind == TokenKind::Api);
    if !owned || !state.guard.tokens().revoke(&id).await.map_err(auth_error)? {
        return Err(ApiError::not_found("there is no such token of yours"));
    }
    audit(&state, &who, peer, "revoke_token", &id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /api/audit[?limit=N]` (admin): the newest audit entries first
/// (sign-ins, failures, throttles, account and token changes).
pub async fn audit_log(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    admin(&state, &who)?;
    let limit = query
        .limit
        .unwrap_or(100)
        .min(crate::auth::MAX_AUDIT_ENTRIES);
    Ok(Json(json!({ "items": state.guard.audit().newest(limit) })).into_response())
}

/// Err unless an admin is asking: 401 / 403. Also in `open` mode: an
/// account made there would outlive the mode.
fn admin(state: &AppState, who: &Principal) -> Result<(), ApiError> {
    if who.is_admin() {
        return Ok(());
    }
    signed_in(state, who)?;
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "only an admin manages accounts and sees the audit log",
    ))
}

/// The signed-in caller's user name (the guard read its account for this
/// very request), or 401.
fn own_name<'a>(state: &AppState, who: &'a Principal) -> Result<&'a str, ApiError> {
    signed_in(state, who)?;
    Ok(who.username.as_deref().unwrap_or_default())
}

/// Records an account or token change made by `who`.
fn audit(state: &AppState, who: &Principal, peer: Peer, action: &'static str, target: &str) {
    state.guard.audit().record(
        who.name(),
        Some(peer.remote),
        "http",
        action,
        Some(target),
        "ok",
    );
}

async fn end_sessions(state: &AppState, username: &str) -> Result<(), ApiError> {
    state
        .guard
        .tokens()
        .revoke_all(username)
        .await
        .map_err(auth_error)?;
    Ok(())
}

async fn body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    request: Request,
) -> Result<T, ApiError> {
    let value = read_json(headers, request.into_body(), state.body_limit, false).await?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn password_or_generated(given: Option<String>) -> Result<(String, bool), ApiError> {
    match given {
        Some(password) => Ok((password, false)),
        None => Ok((generate_password().map_err(auth_error)?, true)),
    }
}

fn no_such_account(name: &str) -> ApiError {
    ApiError::not_found(format!("there is no account named '{name}'"))
}

fn view(account: &Account) -> AccountView<'_> {
    AccountView {
        username: &account.username,
        role: account.role.as_str(),
        disabled: account.disabled,
        created: clock::format_millis(account.created_ms),
        changed: clock::format_millis(account.changed_ms),
        password: None,
    }
}

fn token_view<'a>(id: &'a str, token: &'a Token) -> TokenView<'a> {
    TokenView {
        id,
        name: token.name.as_deref(),
        username: &token.username,
        created: clock::format_millis(token.created_ms),
        last_used: token.last_used_ms.map(clock::format_millis),
        token: None,
    }
}

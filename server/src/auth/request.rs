//! What an HTTP request (a REST call, an SSE stream, a WebSocket upgrade,
//! MQTT over WebSocket) presents: a bearer token, the session cookie, or
//! nothing — and the Origin rule for the cookie (SECURITY.md §7.5).
//!
//! A browser sends the cookie with every request to us, including ones
//! another page starts, so a request that uses the cookie to change
//! something or to open a socket must come from a page of ours: its
//! `Origin` must be exactly one of ours. A bearer token is never sent by
//! itself, so it needs no Origin. A browser's own same-origin GET (an
//! `EventSource` included) carries no `Origin`; such a request may read
//! with the cookie unless `Sec-Fetch-Site` says another site started it.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};

use super::{AuthError, Guard, Principal, TokenKind};

/// The session cookie's name over plain http.
pub const SESSION_COOKIE: &str = "marquee_session";
/// Its name under https (`public_url`): `Secure`, this host only.
pub const SECURE_SESSION_COOKIE: &str = "__Host-marquee_session";

/// What a request proved nothing with.
#[derive(Debug, thiserror::Error)]
pub enum RequestRefusal {
    /// An unknown, expired or revoked cookie or token.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The cookie, from a page that is not ours.
    #[error("bad origin")]
    BadOrigin,
    #[error(transparent)]
    Internal(#[from] AuthError),
}

/// A credential in a request.
pub enum Presented<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
    Nothing,
}

/// The request's bearer token, else its session cookie. A bearer token
/// wins: a script says explicitly who it is.
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if let Some(token) = bearer {
        return Presented::Bearer(token);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| {
            (*name == SESSION_COOKIE || *name == SECURE_SESSION_COOKIE) && !value.is_empty()
        })
        .map_or(Presented::Nothing, |(_, value)| Presented::Cookie(value))
}

impl Guard {
    /// Who a request comes from. `acts` is whether it changes something or
    /// opens a socket (an unsafe method, a WebSocket upgrade): then a cookie
    /// needs an allowed `Origin`. `local` is the address the connection
    /// arrived at.
    pub async fn principal_for_request(
        &self,
        headers: &HeaderMap,
        local: Option<SocketAddr>,
        acts: bool,
    ) -> Result<Principal, RequestRefusal> {
        match presented(headers) {
            Presented::Nothing => Ok(Principal::anonymous()),
            Presented::Bearer(secret) => self
                .principal_for_token(secret, TokenKind::Api)
                .await?
                .ok_or(RequestRefusal::Unauthenticated),
            Presented::Cookie(secret) => {
                self.check_origin(headers, local, acts)?;
                self.principal_for_token(secret, TokenKind::Session)
                    .await?
                    .ok_or(RequestRefusal::Unauthenticated)
            }
        }
    }

    /// The Origin rule for a request that carries our cookie (or asks to
    /// sign in, which would set it): `Origin`, when present, must be one of
    /// ours, and `required` it must be present.
    pub fn check_origin(
        &self,
        headers: &HeaderMap,
        local: Option<SocketAddr>,
        required: bool,
    ) -> Result<(), RequestRefusal> {
        let origin = headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or(""));
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site" || v == "same-site");
        let allowed = match origin {
            Some(origin) => self.origin_allowed(origin, local),
            None => !required && !cross_site,
        };
        if allowed {
            Ok(())
        } else {
            Err(RequestRefusal::BadOrigin)
        }
    }
}

//! The web app's REST calls (`/api/auth/…`, `/api/accounts`, `/api/tokens`,
//! `/api/_tables`): JSON in, JSON out, and the server's refusal as a
//! [`Failure`] that reads as a sentence.
//!
//! A call given the app's [`Auth`] reports a signed-out answer (401
//! `unauthenticated` / `setup_required`) to it, so the app goes to sign-in
//! whichever page made the call. The sign-in calls themselves pass `None`:
//! their 401 means a wrong password, not a lost session.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::Auth;
use crate::event::ErrorBody;

/// A refused or failed call.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The HTTP status; 0 when no answer came.
    pub status: u16,
    pub error: ErrorBody,
    /// Seconds the server asked us to wait (`Retry-After`, with 429).
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Failure {
            status,
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
            retry_after: None,
        }
    }

    /// The server's message as a sentence, with how long to wait if it said.
    pub fn words(&self) -> String {
        let mut text = sentence(&self.error.message);
        if let Some(seconds) = self.retry_after {
            text.push(' ');
            text.push_str(&match seconds {
                0..=1 => "Try again in a second.".to_string(),
                2..=90 => format!("Try again in {seconds} seconds."),
                _ => format!("Try again in {} minutes.", seconds.div_ceil(60)),
            });
        }
        text
    }
}

/// "invalid username or password" → "Invalid username or password."
pub fn sentence(message: &str) -> String {
    let message = message.trim();
    let mut chars = message.chars();
    let mut text: String = match chars.next() {
        Some(first) => upper(first) + chars.as_str(),
        None => "The server refused without saying why".to_string(),
    };
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

/// `c` in upper case. An ASCII letter is done here; any other character, in
/// the browser, by JavaScript's `toUpperCase` (the same Unicode mapping):
/// Rust's own would put core's Unicode case tables, about 10 KB gzipped, into
/// the main bundle every page loads, for the rare non-ASCII first letter.
pub fn upper(c: char) -> String {
    if c.is_ascii() {
        return c.to_ascii_uppercase().to_string();
    }
    #[cfg(feature = "hydrate")]
    {
        web_sys::js_sys::JsString::from(c).to_upper_case().into()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        c.to_uppercase().collect()
    }
}

/// `text` in lower case, the same way as [`upper`] (and for the same reason).
pub fn lower(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    #[cfg(feature = "hydrate")]
    {
        web_sys::js_sys::JsString::from(text).to_lower_case().into()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        text.to_lowercase()
    }
}

/// `%`-encodes one path segment (a user name, a token id).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn no_answer(detail: impl std::fmt::Display) -> Failure {
    Failure::new(
        0,
        "offline",
        format!("the server did not answer ({detail}); check the connection and try again"),
    )
}

pub async fn get<T: DeserializeOwned>(auth: Option<Auth>, path: &str) -> Result<T, Failure> {
    call(auth, "GET", path, None::<&Value>).await
}

pub async fn post<T: DeserializeOwned>(
    auth: Option<Auth>,
    path: &str,
    body: Option<&Value>,
) -> Result<T, Failure> {
    call(auth, "POST", path, body).await
}

pub async fn patch<T: DeserializeOwned>(
    auth: Option<Auth>,
    path: &str,
    body: &Value,
) -> Result<T, Failure> {
    call(auth, "PATCH", path, Some(body)).await
}

pub async fn delete(auth: Option<Auth>, path: &str) -> Result<(), Failure> {
    call(auth, "DELETE", path, None::<&Value>).await
}

/// One call. A `204 No Content` reads as JSON `null` (so `T = ()` fits it).
pub async fn call<T: DeserializeOwned, B: Serialize>(
    auth: Option<Auth>,
    method: &str,
    path: &str,
    body: Option<&B>,
) -> Result<T, Failure> {
    #[cfg(feature = "hydrate")]
    {
        // Generic only at the edges: one copy of the request and of the
        // reading of the answer serves every call.
        let body = match body {
            Some(body) => Some(serde_json::to_string(body).map_err(no_answer)?),
            None => None,
        };
        let (status, value) = browser::fetch(auth, method, path, body).await?;
        serde_json::from_value(value)
            .map_err(|e| Failure::new(status, "bad_answer", format!("unexpected answer: {e}")))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (auth, method, path, body);
        Err(no_answer("not in a browser"))
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use gloo_net::http::{Method, RequestBuilder};
    use serde_json::Value;

    use super::{Failure, no_answer};
    use crate::auth::Auth;
    use crate::event::ErrorBody;

    /// The `{"error": {"code", "message"}}` of a refusal. Read from the JSON
    /// value (whose reader every call has anyway) rather than derived, which
    /// would bring a second JSON reader into the main bundle.
    fn error_body(reply: &Value) -> Option<ErrorBody> {
        let error = reply.get("error")?;
        Some(ErrorBody {
            code: error.get("code")?.as_str()?.to_owned(),
            message: error.get("message")?.as_str()?.to_owned(),
        })
    }

    /// The call, and its answer as JSON with its status; a 401 tells `auth`.
    pub async fn fetch(
        auth: Option<Auth>,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Value), Failure> {
        let result = answer(method, path, body).await;
        if let (Err(failure), Some(auth)) = (&result, auth)
            && failure.status == 401
        {
            auth.lost(&failure.error);
        }
        result
    }

    async fn answer(
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Value), Failure> {
        let method = match method {
            "POST" => Method::POST,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            "PUT" => Method::PUT,
            _ => Method::GET,
        };
        let builder = RequestBuilder::new(path)
            .method(method)
            .header("Accept", "application/json");
        // As RequestBuilder::json does, with the JSON already written.
        let request = match body {
            Some(json) => builder
                .header("Content-Type", "application/json")
                .body(json)
                .map_err(no_answer)?,
            None => builder.build().map_err(no_answer)?,
        };
        let response = request.send().await.map_err(no_answer)?;
        let status = response.status();
        let text = response.text().await.map_err(no_answer)?;
        if response.ok() {
            let value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).map_err(|e| {
                    Failure::new(status, "bad_answer", format!("unreadable answer: {e}"))
                })?
            };
            return Ok((status, value));
        }
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|reply| error_body(&reply))
            .unwrap_or_else(|| ErrorBody {
                code: format!("http_{status}"),
                message: format!("the server answered HTTP {status}"),
            });
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.trim().parse().ok());
        Err(Failure {
            status,
            error,
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_sentences() {
        assert_eq!(
            Failure::new(401, "invalid_credentials", "invalid username or password").words(),
            "Invalid username or password."
        );
        let mut throttled = Failure::new(429, "too_many_attempts", "too many failed attempts");
        throttled.retry_after = Some(4);
        assert_eq!(
            throttled.words(),
            "Too many failed attempts. Try again in 4 seconds."
        );
        throttled.retry_after = Some(600);
        assert!(throttled.words().ends_with("Try again in 10 minutes."));
        assert_eq!(sentence("Done!"), "Done!");
        assert_eq!(segment("a.b_c"), "a.b_c");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert!(sentence("  ").starts_with("The server refused"));
        assert_eq!(sentence("über alles"), "Über alles.");
        assert_eq!(lower("Ann.Ö-1"), "ann.ö-1");
        assert_eq!(lower("Bo_2"), "bo_2");
    }
}

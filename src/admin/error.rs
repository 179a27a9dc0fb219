//! Every error the admin listener answers, and the one function that turns each into a status and a JSON
//! body `{"error": "..."}`.

use bytes::Bytes;
use http::header::{ALLOW, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::auth::Denied;
use crate::store::StoreError;

/// What went wrong with an admin request.
#[derive(Debug)]
pub enum AdminError {
    /// A missing or wrong token, or a Host refused without one.
    Denied(Denied),
    /// No such path, frontend or backend.
    NotFound(String),
    /// The path exists, not with this method; the methods it takes.
    MethodNotAllowed(&'static str),
    /// The request cannot be used as it is (not JSON, a backend that is not an http(s) URL, a bad query).
    BadRequest(String),
    /// The request body is larger than the admin API reads.
    TooLarge,
    /// Routes come from a source the proxy does not write (the routes file, etcd).
    ReadOnly(&'static str),
    /// Redis failed.
    Store(StoreError),
    /// `/ready`: routes cannot be served right now.
    NotReady(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

impl AdminError {
    /// The answer: the status, `{"error": "<what happened>"}`, and the headers the status calls for.
    pub fn response(self) -> Response<Full<Bytes>> {
        let (status, message) = match &self {
            AdminError::Denied(Denied::Token) => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer <--admin-token>".to_string(),
            ),
            AdminError::Denied(Denied::Host) => (
                StatusCode::FORBIDDEN,
                "the Host is not a loopback name or an address; without --admin-token only those \
                 are answered (DNS rebinding)"
                    .to_string(),
            ),
            AdminError::NotFound(what) => (StatusCode::NOT_FOUND, what.clone()),
            AdminError::MethodNotAllowed(allow) => (
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed; this path takes {allow}"),
            ),
            AdminError::BadRequest(why) => (StatusCode::BAD_REQUEST, why.clone()),
            AdminError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} bytes", super::api::MAX_BODY),
            ),
            AdminError::ReadOnly(source) => (
                StatusCode::CONFLICT,
                format!("routes come from {source}, which is read-only here: change them there"),
            ),
            AdminError::Store(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")),
            AdminError::NotReady(why) => (StatusCode::SERVICE_UNAVAILABLE, why.clone()),
        };
        let mut body = serde_json::json!({ "error": message });
        if let AdminError::NotReady(_) = self {
            body["ready"] = serde_json::Value::Bool(false);
        }
        let mut resp = super::json(status, &body);
        match self {
            AdminError::Denied(Denied::Token) => {
                resp.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AdminError::MethodNotAllowed(allow) => {
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}

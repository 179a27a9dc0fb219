//! Every response hypache writes itself comes from [`Reject::response`], so status codes, bodies and headers
//! cannot drift between code paths (docs/compat/planb.md#special-endpoint-and-error-responses). Failures that have no HTTP response to give (a TLS handshake
//! without a usable certificate, an SNI passthrough connection) are the server's `CertError` and `SniError`.

use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPIRES, PRAGMA, RETRY_AFTER,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderValue, Response, StatusCode};

use crate::config::{ErrorPages, ResponseStyle};
use crate::policy::guard::{unix_now, GuardReason};
use crate::policy::ratelimit::RateHeaders;
use crate::policy::Refusal;
use crate::proxy::response::ProxyBody;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Why the proxy answered a request itself instead of relaying a backend's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// No frontend, an identifier-only list, or an empty backend URL: 400 `no such route`.
    NoRoute,
    /// Every backend index is in the dead set: 503 `all backends are dead`.
    AllDead,
    /// Redis failed, the backend failed or timed out, or its URL is unusable: 503 with an empty body.
    Unavailable,
    /// HTTP/1.1 without a Host header: Go's 400, which closes the connection.
    MissingHost,
    /// A malformed request Go's server would refuse (a bad Host, two Hosts, Content-Length with
    /// Transfer-Encoding): 400, and the connection is closed.
    BadRequest(&'static str),
    /// A WebSocket upgrade that failed before the tunnel was up: Go's `http.Error(w, "", 502)`.
    UpgradeFailed,
    /// `Host: __ping__` answered by a healthy Redis.
    PingOk,
    /// `Host: __ping__` while the read Redis fails: 500 with the error text.
    PingFailed(String),
    /// A guard (`guard:<key>`) refused the request: 403 with entree's JSON body for the reason (413 for a body
    /// over `max_body`, whose unread rest closes the connection).
    Guard(GuardReason),
    /// A body a guard had to read (`sign_body`) did not arrive within the client read timeout: 408, and the
    /// connection is closed.
    BodyTimeout,
    /// Over a `ratelimit:<key>` limit: 429 with `Retry-After` and `RateLimit-*` headers (all in seconds).
    RateLimited {
        headers: RateHeaders,
        retry_after: u64,
    },
    /// Over a limit with `compat entree`: entree's 403 `{"code":100420,"msg":"reached rate limit"}`.
    RateLimitedEntree,
    /// The backend did not answer within the request timeout: 503 for PlanB, 504 for Hipache.
    BackendTimeout,
    /// Connecting failed and the retries are used up (`disabled`: the limit is 0). PlanB's 503, Hipache's 502.
    RetriesExhausted { disabled: bool },
    /// The proxy itself is out of descriptors, buffers or memory: 503 in every style, since no backend is at
    /// fault (Hipache's 502 pages say the application is not responding, which would be untrue).
    Overloaded,
}

impl Reject {
    /// The status PlanB gives this case.
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::NoRoute | Reject::MissingHost | Reject::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Reject::AllDead
            | Reject::Unavailable
            | Reject::BackendTimeout
            | Reject::Overloaded
            | Reject::RetriesExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Reject::UpgradeFailed => StatusCode::BAD_GATEWAY,
            Reject::PingOk => StatusCode::OK,
            Reject::PingFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Reject::Guard(GuardReason::BodyTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::Guard(_) | Reject::RateLimitedEntree => StatusCode::FORBIDDEN,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The body PlanB gives this case.
    pub fn body(&self) -> String {
        match self {
            Reject::NoRoute => "no such route".into(),
            Reject::AllDead => "all backends are dead".into(),
            Reject::Unavailable
            | Reject::BackendTimeout
            | Reject::Overloaded
            | Reject::RetriesExhausted { .. } => String::new(),
            Reject::UpgradeFailed => "\n".into(),
            Reject::MissingHost => "400 Bad Request: missing required Host header".into(),
            Reject::BadRequest(why) => format!("400 Bad Request: {why}"),
            Reject::BodyTimeout => "408 Request Timeout: request body not received in time".into(),
            Reject::PingOk => "OK".into(),
            Reject::PingFailed(text) => text.clone(),
            Reject::Guard(GuardReason::BadTimestamp) => {
                let r = GuardReason::BadTimestamp;
                format!(
                    r#"{{"code":{},"msg":"{}","ts":{}}}"#,
                    r.code(),
                    r.message(),
                    unix_now()
                )
            }
            Reject::Guard(r) => format!(r#"{{"code":{},"msg":"{}"}}"#, r.code(), r.message()),
            Reject::RateLimitedEntree => r#"{"code":100420,"msg":"reached rate limit"}"#.into(),
            Reject::RateLimited { .. } => "rate limit exceeded".into(),
        }
    }

    /// The whole response, with the headers Go's server would have written.
    pub fn response(&self) -> Response<ProxyBody> {
        let body = self.body();
        let mut resp = Response::new(ProxyBody::full(body.clone()));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        if let Reject::Guard(_) | Reject::RateLimitedEntree = self {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        } else if !body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
        }
        if let Reject::RateLimited {
            headers: limit,
            retry_after,
        } = self
        {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            limit.insert(headers);
        }
        if *self == Reject::UpgradeFailed {
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Reject::Guard(GuardReason::BodyTooLarge) | Reject::BodyTimeout = self {
            // The rest of the body is never read: the connection cannot carry another request.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Reject::MissingHost | Reject::BadRequest(_) = self {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
            let reason = format!("Bad Request: {}", &body["400 Bad Request: ".len()..]);
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
                resp.extensions_mut().insert(reason);
            }
        }
        resp
    }
}

impl From<Refusal> for Reject {
    /// The answer to a request the policy layer refused.
    fn from(refusal: Refusal) -> Reject {
        match refusal {
            Refusal::Guard(reason) => Reject::Guard(reason),
            Refusal::BodyTimeout => Reject::BodyTimeout,
            Refusal::IncompleteBody => Reject::BadRequest("incomplete request body"),
            Refusal::Unavailable => Reject::Unavailable,
            Refusal::RateLimited {
                headers,
                retry_after,
            } => Reject::RateLimited {
                headers,
                retry_after,
            },
            Refusal::RateLimitedEntree => Reject::RateLimitedEntree,
        }
    }
}

/// The value of `x-debug-version-hipache` on Hipache-style answers.
pub const HIPACHE_DEBUG_VERSION: &str = concat!("hypache/", env!("CARGO_PKG_VERSION"));

impl Reject {
    /// The response in the configured style; `debug` (the request had an `X-Debug` header) adds Hipache's
    /// `x-debug-error` and `x-debug-version-hipache`.
    pub fn response_in(&self, style: &ResponseStyle, debug: bool) -> Response<ProxyBody> {
        let pages = match style {
            ResponseStyle::Planb => return self.response(),
            ResponseStyle::Httprouter => return self.httprouter(),
            ResponseStyle::Hipache(pages) => pages,
        };
        let Some((status, message)) = self.hipache() else {
            return self.response();
        };
        let mut resp = match pages.page(status.as_u16()) {
            Some(page) => {
                let mut resp = Response::new(ProxyBody::full(page));
                let h = resp.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
                resp
            }
            None => {
                let mut resp = Response::new(ProxyBody::full(message));
                let h = resp.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                h.insert(CONTENT_LENGTH, HeaderValue::from(message.len()));
                resp
            }
        };
        // Hipache's errorMessage sets the no-cache trio before it knows whether a page exists, so the plain-text
        // fallback carries it too; `__ping__`'s `ok` is not an error message and has none.
        if status.as_u16() >= 400 {
            let h = resp.headers_mut();
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
            h.insert(EXPIRES, HeaderValue::from_static("-1"));
        }
        *resp.status_mut() = status;
        if debug {
            let h = resp.headers_mut();
            h.insert("x-debug-error", HeaderValue::from_static(message));
            h.insert(
                "x-debug-version-hipache",
                HeaderValue::from_static(HIPACHE_DEBUG_VERSION),
            );
        }
        resp
    }

    /// httprouter's answers: an unknown host or an empty pool is 503 with its sentence, a backend that failed
    /// is 502 (Go's ReverseProxy); the rest as PlanB's.
    fn httprouter(&self) -> Response<ProxyBody> {
        let (status, body) = match self {
            Reject::NoRoute | Reject::AllDead => (
                StatusCode::SERVICE_UNAVAILABLE,
                "This site is currently unavailable, please try again later.",
            ),
            Reject::Unavailable | Reject::RetriesExhausted { .. } => (StatusCode::BAD_GATEWAY, ""),
            _ => return self.response(),
        };
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if !body.is_empty() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
        }
        h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        resp
    }

    /// Hipache's status and message (its `x-debug-error`, and the body when there is no page); `None` for the
    /// answers that keep one form in every style (malformed requests, guards, rate limits).
    fn hipache(&self) -> Option<(StatusCode, &'static str)> {
        Some(match self {
            Reject::NoRoute => (StatusCode::BAD_REQUEST, "frontend not found"),
            Reject::MissingHost => (StatusCode::BAD_REQUEST, "no host header"),
            Reject::AllDead | Reject::UpgradeFailed => {
                (StatusCode::BAD_GATEWAY, "Cannot find a valid backend")
            }
            Reject::Unavailable => (StatusCode::BAD_GATEWAY, "Cannot reach a valid backend"),
            Reject::RetriesExhausted { disabled: false } => {
                (StatusCode::BAD_GATEWAY, "Reached max retries limit")
            }
            Reject::RetriesExhausted { disabled: true } => {
                (StatusCode::BAD_GATEWAY, "Retry on error is disabled")
            }
            Reject::BackendTimeout => (StatusCode::GATEWAY_TIMEOUT, "Backend timed out"),
            Reject::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "Proxy out of resources"),
            Reject::PingOk => (StatusCode::OK, "ok"),
            _ => return None,
        })
    }
}

impl ErrorPages {
    /// `error_<status>.html`, else `error_default.html`; `None` means plain text.
    pub fn page(&self, status: u16) -> Option<bytes::Bytes> {
        if status < 400 {
            return None;
        }
        self.by_status
            .get(&status)
            .or(self.default.as_ref())
            .cloned()
    }
}

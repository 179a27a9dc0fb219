//! The dashboard: one page, its script and its style, written by hand and embedded in the binary. No CDN, no
//! request to any other host, no build step. Served with `Content-Security-Policy: default-src 'self'`, which
//! is why the script and the style are files of their own rather than inline.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::Full;

use super::paths::Asset;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");
const ICON: &str = include_str!("dashboard/favicon.svg");

/// Only this listener's own files, nothing inline, no framing by another site, no form posts.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the dashboard.
pub fn serve(asset: Asset) -> Response<Full<Bytes>> {
    let (body, content_type) = match asset {
        Asset::Index => (INDEX, "text/html; charset=utf-8"),
        Asset::Script => (SCRIPT, "text/javascript; charset=utf-8"),
        Asset::Style => (STYLE, "text/css; charset=utf-8"),
        Asset::Icon => (ICON, "image/svg+xml"),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // A new binary may bring a new page: revalidate rather than mix an old script with a new page.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

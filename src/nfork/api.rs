//! gonfork's REST controller under `/v1/nfork` (its `controller.go` through gorest): JSON bodies, a handler
//! error is 400 with the message as plain text, a handler with nothing to return is 204. Beyond gonfork:
//! `POST /v1/nfork/:inbound/:outbound/activate` (gonfork had `ActivateOutbound` but did not route it) and
//! `GET /v1/nfork/:inbound/skipped` (the copies each shadow did not get).

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::inbound::{InboundState, NforkBody};
use super::stats::Stats;
use super::Controller;
use crate::config::nfork::Inbound;

const PREFIX: &str = "/v1/nfork";
/// The largest request body the controller reads (an inbound's JSON is a few hundred bytes).
const MAX_BODY: usize = 1024 * 1024;

/// What a handler returns: a JSON value (200), nothing (204), or an error message (400).
enum Outcome {
    Json(Vec<u8>),
    Nothing,
    Error(String),
}

fn json(value: &impl Serialize) -> Outcome {
    Outcome::Json(serde_json::to_vec(value).expect("controller answers serialize"))
}

/// Answer one controller request.
pub async fn handle(
    controller: &Controller,
    req: Request<Incoming>,
) -> Result<Response<NforkBody>, Infallible> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(status(StatusCode::NOT_FOUND, "404 page not found"));
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Ok(status(StatusCode::NOT_FOUND, "404 page not found"));
    }
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let allowed: &[Method] = match segments.as_slice() {
        [] => &[Method::GET, Method::POST],
        ["stats"] | [_, "stats"] | [_, "skipped"] | [_, _, "stats"] => &[Method::GET],
        [_] => &[Method::GET, Method::DELETE],
        [_, _] => &[Method::PUT, Method::DELETE],
        [_, _, "activate"] => &[Method::POST],
        _ => return Ok(status(StatusCode::NOT_FOUND, "404 page not found")),
    };
    if !allowed.contains(&method) {
        let mut resp = status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
            resp.headers_mut().insert(header::ALLOW, value);
        }
        return Ok(resp);
    }
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(e) => return Ok(answer(Outcome::Error(e))),
    };
    let outcome = match (method, segments.as_slice()) {
        (Method::GET, []) => {
            let list: Vec<_> = controller.list().iter().map(Inbound::to_json).collect();
            json(&list)
        }
        (_, []) => match parse_json(&body).and_then(Inbound::from_json) {
            Ok(inbound) => result(controller.add(inbound).await),
            Err(e) => Outcome::Error(e),
        },
        (_, ["stats"]) => {
            let all: BTreeMap<String, BTreeMap<String, Stats>> = controller
                .all()
                .iter()
                .map(|state| (state.config.name.clone(), inbound_stats(state)))
                .collect();
            json(&all)
        }
        (Method::GET, [inbound]) => match controller.get(inbound) {
            Ok(state) => json(&state.config.to_json()),
            Err(e) => Outcome::Error(e),
        },
        (_, [inbound]) => result(controller.remove(inbound)),
        (_, [inbound, "stats"]) => match controller.get(inbound) {
            Ok(state) => json(&inbound_stats(&state)),
            Err(e) => Outcome::Error(e),
        },
        (_, [inbound, "skipped"]) => match controller.get(inbound) {
            Ok(state) => {
                let skipped: BTreeMap<&str, serde_json::Value> = state
                    .outbounds()
                    .map(|o| (o.name.as_str(), o.shared.skipped.to_json()))
                    .collect();
                json(&skipped)
            }
            Err(e) => Outcome::Error(e),
        },
        (Method::PUT, [inbound, outbound]) => {
            let addr = parse_json(&body).and_then(|value| {
                serde_json::from_value::<String>(value)
                    .map_err(|e| format!("the body must be a JSON string with the address: {e}"))
            });
            match addr {
                Ok(addr) => result(controller.update(inbound, |config| {
                    config.out.insert(outbound.to_string(), addr);
                    Ok(())
                })),
                Err(e) => Outcome::Error(e),
            }
        }
        (_, [inbound, outbound]) => result(controller.update(inbound, |config| {
            if !config.out.contains_key(*outbound) {
                return Err(unknown_outbound(inbound, outbound));
            }
            if config.active == *outbound {
                return Err(format!(
                    "can't remove active outbound '{outbound}' for inbound '{inbound}'"
                ));
            }
            config.out.remove(*outbound);
            Ok(())
        })),
        (_, [inbound, outbound, "stats"]) => match controller.get(inbound) {
            Ok(state) => match state.outbounds().find(|o| o.name == *outbound) {
                Some(o) => json(&o.shared.stats.read()),
                None => Outcome::Error(unknown_outbound(inbound, outbound)),
            },
            Err(e) => Outcome::Error(e),
        },
        (_, [inbound, outbound, "activate"]) => result(controller.update(inbound, |config| {
            if !config.out.contains_key(*outbound) {
                return Err(unknown_outbound(inbound, outbound));
            }
            config.active = outbound.to_string();
            Ok(())
        })),
        _ => Outcome::Error("no such route".into()),
    };
    Ok(answer(outcome))
}

fn inbound_stats(state: &InboundState) -> BTreeMap<String, Stats> {
    state
        .outbounds()
        .map(|o| (o.name.clone(), o.shared.stats.read()))
        .collect()
}

fn unknown_outbound(inbound: &str, outbound: &str) -> String {
    format!("unknown outbound '{outbound}' for inbound '{inbound}'")
}

fn result(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Nothing,
        Err(e) => Outcome::Error(e),
    }
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, String> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| format!("unable to read the body: {e}"))
}

fn answer(outcome: Outcome) -> Response<NforkBody> {
    match outcome {
        Outcome::Json(bytes) => {
            let mut resp = Response::new(NforkBody::full(bytes));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Outcome::Nothing => {
            let mut resp = Response::new(NforkBody::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        Outcome::Error(message) => status(StatusCode::BAD_REQUEST, &message),
    }
}

fn status(code: StatusCode, message: &str) -> Response<NforkBody> {
    let mut resp = Response::new(NforkBody::full(format!("{message}\n")));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

//! Logging and request ids. `RUST_LOG` (or `log.filter`) picks what is
//! shown, `HELPLINE_LOG_FORMAT` how: readable lines or one JSON object per
//! line. Every HTTP request gets an `x-request-id` (kept when the proxy sent
//! one), echoed in the response and recorded on the request's span; a
//! webhook event keeps its delivery's id, and the worker logs it.
//! Tests keep quiet unless `TEST_LOG` is set.

use axum::{
    extract::{MatchedPath, Request},
    Router,
};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing::Span;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Human-format logging with `default_filter` unless `RUST_LOG` says
/// otherwise. A second call (several tests in one process) is harmless.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A second call (several tests in one process) is harmless.
    let _ = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logging as configured, to stderr (stdout carries what commands report).
pub fn init_with(log: &LogConfig) {
    let filter = EnvFilter::try_new(&log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = match log.format {
        LogFormat::Human => fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Json => fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .try_init(),
    };
}

/// Wraps the routes: a request id on the way in, a span per request named
/// after the matched route, the id echoed on the way out.
pub fn layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

fn request_span(request: &Request) -> Span {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), path, request_id = id)
}

//! Security headers on every response: no MIME sniffing, a sober referrer,
//! and for everything Helpline itself renders (the demo page, the agent
//! console, the API), a Content Security Policy without `'unsafe-inline'`
//! that also forbids framing (clickjacking).
//!
//! When the public URL is https, every response also tells browsers to
//! use https only (`Strict-Transport-Security`), so a later visit cannot be
//! downgraded to plain http on the way.
//!
//! `/widget.js` is the exception: it runs inside customers' pages, so it
//! gets neither framing rules nor a CSP (a CSP on a script response would be
//! ignored anyway; sending none keeps it obviously embeddable).

use axum::{
    extract::Request,
    http::{header, HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};

/// The policy of Helpline's own documents: scripts and styles only from
/// files served here (no inline code), sockets back to this host, never in
/// a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
pub const REFERRER_POLICY: &str = "strict-origin-when-cross-origin";
/// A year, without subdomains: the operator's other hosts are not ours to
/// pin to https.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// Paths loaded by other sites' pages.
fn embeddable(path: &str) -> bool {
    path == "/widget.js"
}

/// `axum::middleware::from_fn` layer, outermost in `startup::app`. Headers a
/// handler set itself are kept.
pub async fn add(request: Request, next: Next) -> Response {
    let embeddable = embeddable(request.uri().path());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, REFERRER_POLICY);
    if !embeddable {
        set(header::X_FRAME_OPTIONS, "DENY");
        set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    }
    response
}

/// `axum::middleware::from_fn` layer for a server whose public URL is https.
pub async fn https_only(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .entry(header::STRICT_TRANSPORT_SECURITY)
        .or_insert_with(|| HeaderValue::from_static(STRICT_TRANSPORT_SECURITY));
    response
}

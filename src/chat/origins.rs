//! Which web sites may use the widget: the `Origin` check shared by
//! `POST /api/visitors` (CORS) and the socket upgrade (defence against
//! cross-site WebSocket hijacking).
//!
//! Browsers always send `Origin` on cross-origin requests and on WebSocket
//! handshakes, and page scripts cannot forge it. A request without `Origin`
//! comes from a non-browser client (a mobile app, a script, the tests): no
//! browser page can have made it on a visitor's behalf, so it is not refused.

use std::fmt;

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// Used when `HELPLINE_ALLOWED_ORIGINS` is not set: pages served from this
/// machine, on any port, which is what local development needs.
pub const DEFAULT_ALLOWED_ORIGINS: &str = "http://localhost:* http://127.0.0.1:* http://[::1]:*";

/// How long a browser may cache a preflight answer (Chromium caps it at 2 h).
const PREFLIGHT_MAX_AGE_SECS: &str = "7200";

/// The origins allowed to call the customer endpoints from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins {
    any: bool,
    patterns: Vec<Pattern>,
}

/// `scheme://host[:port]`, lower case, default ports left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    scheme: String,
    host: String,
    port: Port,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// No port, or the scheme's default one.
    Default,
    Number(u16),
    /// `:*`, only in configured patterns.
    Any,
}

impl AllowedOrigins {
    /// Parses a list of origins separated by commas or white space. An entry
    /// is `*` (any origin), `scheme://host`, `scheme://host:port` or
    /// `scheme://host:*` (any port); the scheme is `http` or `https`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut allowed = Self {
            any: false,
            patterns: Vec::new(),
        };
        let mut bad = Vec::new();
        for entry in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                allowed.any = true;
            } else {
                match Pattern::parse(entry.strip_suffix('/').unwrap_or(entry), true) {
                    Some(p) => allowed.patterns.push(p),
                    None => bad.push(format!("{entry:?}")),
                }
            }
        }
        if !bad.is_empty() {
            return Err(format!(
                "not an origin like https://shop.example.com or http://localhost:*: {}",
                bad.join(", ")
            ));
        }
        Ok(allowed)
    }

    /// Also allows the origin of `url` (this instance's own public URL, so
    /// that the demo page it serves keeps working). Ignored if unparsable.
    pub fn allow_url(&mut self, url: &str) {
        let origin = match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                format!("{scheme}://{authority}")
            }
            None => return,
        };
        if let Some(p) = Pattern::parse(&origin, false) {
            if !self.patterns.contains(&p) {
                self.patterns.push(p);
            }
        }
    }

    /// Whether a browser page with this `Origin` header value may call us.
    pub fn allows(&self, origin: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(o) = Pattern::parse(origin, false) else {
            return false; // includes "null" (sandboxed frames, file: pages)
        };
        self.patterns.iter().any(|p| {
            p.scheme == o.scheme && p.host == o.host && (p.port == Port::Any || p.port == o.port)
        })
    }
}

impl Default for AllowedOrigins {
    fn default() -> Self {
        Self::parse(DEFAULT_ALLOWED_ORIGINS).expect("the default list parses")
    }
}

impl fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries: Vec<String> = self.patterns.iter().map(Pattern::to_string).collect();
        if self.any {
            entries.insert(0, "*".into());
        }
        f.write_str(&entries.join(" "))
    }
}

impl Pattern {
    fn parse(s: &str, allow_any_port: bool) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        let (scheme, rest) = s.split_once("://")?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (host, port) = match rest.strip_prefix('[') {
            // An IPv6 literal: [::1]:8080
            Some(v6) => {
                let (inner, after) = v6.split_once(']')?;
                let ok = !inner.is_empty()
                    && inner
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
                ok.then(|| (format!("[{inner}]"), after))?
            }
            None => match rest.find(':') {
                Some(colon) => (rest[..colon].to_owned(), &rest[colon..]),
                None => (rest.to_owned(), ""),
            },
        };
        let host_ok = !host.is_empty()
            && (host.starts_with('[')
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
        if !host_ok {
            return None;
        }
        let port = match port {
            "" => Port::Default,
            ":*" if allow_any_port => Port::Any,
            p => match p.strip_prefix(':')?.parse::<u16>().ok()? {
                n if n == default_port => Port::Default,
                n => Port::Number(n),
            },
        };
        Some(Self {
            scheme: scheme.to_owned(),
            host,
            port,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Port::Default => Ok(()),
            Port::Number(n) => write!(f, ":{n}"),
            Port::Any => f.write_str(":*"),
        }
    }
}

/// Checks the request's `Origin`: `Ok(None)` without one (not a browser
/// page), `Ok(Some(origin))` when allowed, a 403 `origin_not_allowed` else.
pub fn check(
    allowed: &AllowedOrigins,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    match origin.to_str() {
        Ok(o) if allowed.allows(o) => Ok(Some(origin.clone())),
        _ => {
            tracing::info!(origin = ?origin, "request from an origin not in HELPLINE_ALLOWED_ORIGINS refused");
            Err(ApiError::forbidden(
                "origin_not_allowed",
                "this site is not allowed to use this Helpline (HELPLINE_ALLOWED_ORIGINS)",
            ))
        }
    }
}

/// Adds the CORS headers of an allowed origin to an actual response.
pub fn with_cors(origin: Option<HeaderValue>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

/// The answer to a CORS preflight for a JSON `POST`.
pub fn preflight(origin: Option<HeaderValue>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
    );
    with_cors(origin, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_this_machine_on_any_port_and_nothing_else() {
        let allowed = AllowedOrigins::default();
        assert!(allowed.allows("http://localhost:3000"));
        assert!(allowed.allows("http://localhost"));
        assert!(allowed.allows("http://127.0.0.1:41234"));
        assert!(allowed.allows("http://[::1]:8080"));
        assert!(!allowed.allows("https://localhost:3000"));
        assert!(!allowed.allows("http://localhost.evil.example"));
        assert!(!allowed.allows("http://127.0.0.1.evil.example:80"));
        assert!(!allowed.allows("https://evil.example"));
        assert!(!allowed.allows("null"));
        assert!(!allowed.allows(""));
    }

    #[test]
    fn lists_may_use_commas_or_spaces_and_default_ports_are_normalised() {
        let allowed = AllowedOrigins::parse(
            "https://shop.example.com/, https://www.example.com:443\nhttp://a.test:8080",
        )
        .unwrap();
        assert!(allowed.allows("https://shop.example.com"));
        assert!(allowed.allows("https://SHOP.example.com:443"));
        assert!(allowed.allows("https://www.example.com"));
        assert!(allowed.allows("http://a.test:8080"));
        assert!(!allowed.allows("http://a.test"));
        assert!(!allowed.allows("http://shop.example.com"));
        assert!(!allowed.allows("https://example.com"));
    }

    #[test]
    fn a_star_allows_any_origin() {
        let allowed = AllowedOrigins::parse("*").unwrap();
        assert!(allowed.allows("https://anyone.example"));
    }

    #[test]
    fn entries_that_are_not_origins_are_reported() {
        let e = AllowedOrigins::parse(
            "https://ok.example ftp://x.example https://x.example/path example.com",
        )
        .unwrap_err();
        assert!(e.contains("ftp://x.example"), "{e}");
        assert!(e.contains("https://x.example/path"), "{e}");
        assert!(e.contains("\"example.com\""), "{e}");
        assert!(!e.contains("ok.example"), "{e}");
        assert!(AllowedOrigins::parse("https://x.example:*").is_ok());
        assert!(AllowedOrigins::parse("https://x.example:99999").is_err());
    }

    #[test]
    fn the_public_url_adds_its_origin() {
        let mut allowed = AllowedOrigins::parse("https://shop.example.com").unwrap();
        allowed.allow_url("https://support.example.com/helpline/");
        assert!(allowed.allows("https://support.example.com"));
        assert_eq!(
            allowed.to_string(),
            "https://shop.example.com https://support.example.com"
        );
    }
}

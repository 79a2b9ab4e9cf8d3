//! Arbitrary webhook headers and body through the Standard Webhooks verifier.
#![no_main]

use helpline::webhooks::signature::{self, WebhookSecret};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Fields separated by NUL: id, timestamp, signature, then the body.
    let mut parts = data.splitn(4, |&b| b == 0);
    let (id, ts, sig) = (parts.next(), parts.next(), parts.next());
    let body = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (signature::ID_HEADER, id),
        (signature::TIMESTAMP_HEADER, ts),
        (signature::SIGNATURE_HEADER, sig),
    ] {
        if let Some(Ok(v)) = value.map(HeaderValue::from_bytes) {
            headers.append(name, v);
        }
    }
    let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let _ = signature::verify(&[secret], &headers, body, 1_700_000_000);
});

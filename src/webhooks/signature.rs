//! Standard Webhooks signatures, verified exactly as OpenAI's official SDKs do
//! (see `shared/reference/openai-webhooks.md`), and produced the same way by
//! the simulator.
//!
//! Signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`; the
//! signature is base64(HMAC-SHA256(key, content)); the `webhook-signature`
//! header holds a space-separated list of `v1,<base64>` entries, any one of
//! which may match.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a timestamp may be from our clock, either way (the SDKs' default).
pub const TOLERANCE_SECS: i64 = 300;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Bounds on what a delivery may make us read and compute before it is
/// refused: OpenAI sends one or two entries of 47 bytes and ids of ~35 bytes,
/// so these leave room for rotations without letting a forged request buy
/// hundreds of HMACs.
pub const MAX_SIGNATURES: usize = 8;
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 1024;
pub const MAX_ID_HEADER_BYTES: usize = 256;

/// A signing key. Never printed.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the webhook secret is empty")]
    Empty,
    #[error("the part after whsec_ is not valid base64")]
    InvalidBase64,
}

impl WebhookSecret {
    /// `whsec_<base64>` is decoded; anything else is used as raw UTF-8 bytes,
    /// as openai-python and openai-node do.
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let key = match raw.strip_prefix("whsec_") {
            Some(b64) => STANDARD
                .decode(b64)
                .map_err(|_| SecretError::InvalidBase64)?,
            None => raw.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { key })
    }

    /// A space-separated list, for rotation: every listed secret is accepted.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, SecretError> {
        let secrets = raw
            .split_whitespace()
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(secrets)
    }

    /// A fresh 32-byte secret and its `whsec_` form.
    pub fn generate() -> (String, Self) {
        let key: [u8; 32] = rand::random();
        (
            format!("whsec_{}", STANDARD.encode(key)),
            Self { key: key.to_vec() },
        )
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// Why a delivery was refused. `code()` is what the 400 body names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    #[error("the {0} header is given more than once")]
    DuplicateHeader(&'static str),
    #[error("the {0} header is too long")]
    HeaderTooLarge(&'static str),
    #[error("webhook-signature holds more than {MAX_SIGNATURES} entries")]
    TooManySignatures,
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is more than {TOLERANCE_SECS} seconds old")]
    TimestampTooOld,
    #[error("webhook-timestamp is more than {TOLERANCE_SECS} seconds in the future")]
    TimestampTooNew,
    #[error("no signature in webhook-signature matches")]
    InvalidSignature,
}

impl VerifyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::DuplicateHeader(_) => "duplicate_header",
            Self::HeaderTooLarge(_) => "header_too_large",
            Self::TooManySignatures => "too_many_signatures",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::TimestampTooNew => "timestamp_too_new",
            Self::InvalidSignature => "invalid_signature",
        }
    }
}

/// The headers of a delivery that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub webhook_id: String,
    pub timestamp: i64,
}

/// Checks one delivery against every configured secret, at clock time `now`
/// (Unix seconds).
pub fn verify(
    secrets: &[WebhookSecret],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    // A header given twice is ambiguous (which one did the proxy check?): refused.
    let header = |name: &'static str, max_len: usize| {
        let mut values = headers.get_all(name).iter();
        let value = values.next();
        if values.next().is_some() {
            return Err(VerifyError::DuplicateHeader(name));
        }
        let value = value
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::MissingHeader(name))?;
        if value.len() > max_len {
            return Err(VerifyError::HeaderTooLarge(name));
        }
        Ok(value)
    };
    let id = header(ID_HEADER, MAX_ID_HEADER_BYTES)?;
    let timestamp_text = header(TIMESTAMP_HEADER, MAX_ID_HEADER_BYTES)?;
    let signatures = header(SIGNATURE_HEADER, MAX_SIGNATURE_HEADER_BYTES)?;
    // Counted before any decoding: the work per request stays bounded by
    // MAX_SIGNATURES x secrets HMAC comparisons (one HMAC per secret).
    if signatures.split(' ').filter(|e| !e.is_empty()).count() > MAX_SIGNATURES {
        return Err(VerifyError::TooManySignatures);
    }

    let timestamp = parse_timestamp(timestamp_text)?;
    if now - timestamp > TOLERANCE_SECS {
        return Err(VerifyError::TimestampTooOld);
    }
    if timestamp - now > TOLERANCE_SECS {
        return Err(VerifyError::TimestampTooNew);
    }

    // Decode the offered signatures once; only complete 32-byte `v1` MACs count,
    // so `v1,` alone or a prefix of the right value can never match.
    let offered: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, b64)| STANDARD.decode(b64).ok())
        .filter(|mac| mac.len() == 32)
        .collect();

    let matches = secrets.iter().any(|secret| {
        let expected = secret.mac(id, timestamp_text, body);
        offered
            .iter()
            .any(|mac| bool::from(mac.as_slice().ct_eq(&expected)))
    });
    if !matches {
        return Err(VerifyError::InvalidSignature);
    }
    Ok(Verified {
        webhook_id: id.to_owned(),
        timestamp,
    })
}

/// Digits only: no sign, spaces or exponent, and it must fit an i64.
fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    text.parse().map_err(|_| VerifyError::InvalidTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const PY_SECRET: &str = "whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c=";
    const PY_ID: &str = "wh_685c059ae39c8190af8c71ed1022a24d";
    const PY_TS: i64 = 1750861210;
    const PY_BODY: &str = r#"{"id": "evt_685c059ae3a481909bdc86819b066fb6", "object": "event", "created_at": 1750861210, "type": "response.completed", "data": {"id": "resp_123"}}"#;
    const PY_SIG: &str = "v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY=";

    const SW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SW_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SW_TS: i64 = 1649367553;
    const SW_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SW_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ID_HEADER, HeaderValue::from_str(id).unwrap());
        h.insert(TIMESTAMP_HEADER, HeaderValue::from_str(ts).unwrap());
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    fn secrets(raw: &str) -> Vec<WebhookSecret> {
        WebhookSecret::parse_list(raw).unwrap()
    }

    fn check(sig: &str, now: i64) -> Result<Verified, VerifyError> {
        verify(
            &secrets(PY_SECRET),
            &headers(PY_ID, &PY_TS.to_string(), sig),
            PY_BODY.as_bytes(),
            now,
        )
    }

    #[test]
    fn openai_python_vector_verifies() {
        let v = check(PY_SIG, PY_TS).unwrap();
        assert_eq!(
            v,
            Verified {
                webhook_id: PY_ID.into(),
                timestamp: PY_TS
            }
        );
    }

    #[test]
    fn standard_webhooks_vector_verifies() {
        let h = headers(SW_ID, &SW_TS.to_string(), SW_SIG);
        verify(&secrets(SW_SECRET), &h, SW_BODY.as_bytes(), SW_TS).unwrap();
    }

    #[test]
    fn signing_reproduces_both_vectors() {
        let py = WebhookSecret::parse(PY_SECRET).unwrap();
        assert_eq!(
            py.sign(PY_ID, &PY_TS.to_string(), PY_BODY.as_bytes()),
            PY_SIG
        );
        let sw = WebhookSecret::parse(SW_SECRET).unwrap();
        assert_eq!(
            sw.sign(SW_ID, &SW_TS.to_string(), SW_BODY.as_bytes()),
            SW_SIG
        );
    }

    #[test]
    fn a_wrong_signature_is_refused() {
        let wrong = "v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBZ=";
        assert_eq!(check(wrong, PY_TS), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn a_changed_body_is_refused() {
        let h = headers(PY_ID, &PY_TS.to_string(), PY_SIG);
        let body = PY_BODY.replace("resp_123", "resp_124");
        let result = verify(&secrets(PY_SECRET), &h, body.as_bytes(), PY_TS);
        assert_eq!(result, Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn timestamps_one_second_past_the_tolerance_are_refused_both_ways() {
        assert!(check(PY_SIG, PY_TS + TOLERANCE_SECS).is_ok());
        assert_eq!(
            check(PY_SIG, PY_TS + TOLERANCE_SECS + 1),
            Err(VerifyError::TimestampTooOld)
        );
        assert!(check(PY_SIG, PY_TS - TOLERANCE_SECS).is_ok());
        assert_eq!(
            check(PY_SIG, PY_TS - TOLERANCE_SECS - 1),
            Err(VerifyError::TimestampTooNew)
        );
    }

    #[test]
    fn one_valid_signature_among_several_is_enough() {
        let sig =
            format!("v1,Zm9vYmFy v2,abc {PY_SIG} v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBZ=");
        assert!(check(&sig, PY_TS).is_ok());
    }

    #[test]
    fn several_signatures_with_none_valid_are_refused() {
        let sig = "v1,Zm9vYmFy v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBZ= v2,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY=";
        assert_eq!(check(sig, PY_TS), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn each_missing_header_is_named() {
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut h = headers(PY_ID, &PY_TS.to_string(), PY_SIG);
            h.remove(name);
            let result = verify(&secrets(PY_SECRET), &h, PY_BODY.as_bytes(), PY_TS);
            assert_eq!(result, Err(VerifyError::MissingHeader(name)));
        }
    }

    #[test]
    fn partial_signatures_never_match() {
        assert_eq!(check("v1,", PY_TS), Err(VerifyError::InvalidSignature));
        assert_eq!(
            check("v1,gUAg4R2hWouRZqRQ", PY_TS),
            Err(VerifyError::InvalidSignature)
        );
        let truncated = &PY_SIG[..PY_SIG.len() - 4];
        assert_eq!(check(truncated, PY_TS), Err(VerifyError::InvalidSignature));
        assert_eq!(
            check("gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY=", PY_TS),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn an_empty_secret_is_rejected() {
        assert_eq!(WebhookSecret::parse("").unwrap_err(), SecretError::Empty);
        assert_eq!(
            WebhookSecret::parse("whsec_").unwrap_err(),
            SecretError::Empty
        );
        assert!(WebhookSecret::parse_list("   ").is_err());
    }

    #[test]
    fn a_secret_without_the_prefix_is_used_as_raw_bytes() {
        let raw = WebhookSecret::parse("my-plain-secret").unwrap();
        let sig = raw.sign("id", "1", b"{}");
        let h = headers("id", "1", &sig);
        assert!(verify(&[raw], &h, b"{}", 1).is_ok());
    }

    #[test]
    fn either_secret_verifies_during_a_rotation() {
        let both = secrets(&format!("{SW_SECRET} {PY_SECRET}"));
        let h = headers(PY_ID, &PY_TS.to_string(), PY_SIG);
        assert!(verify(&both, &h, PY_BODY.as_bytes(), PY_TS).is_ok());
    }

    #[test]
    fn a_header_given_twice_is_refused() {
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut h = headers(PY_ID, &PY_TS.to_string(), PY_SIG);
            let first = h.get(name).unwrap().clone();
            h.append(name, first);
            let result = verify(&secrets(PY_SECRET), &h, PY_BODY.as_bytes(), PY_TS);
            assert_eq!(result, Err(VerifyError::DuplicateHeader(name)), "{name}");
        }
    }

    #[test]
    fn oversized_headers_and_too_many_signatures_are_refused() {
        let nine = [PY_SIG; 9].join(" ");
        assert_eq!(check(&nine, PY_TS), Err(VerifyError::TooManySignatures));
        let eight = [PY_SIG; 8].join(" ");
        assert!(check(&eight, PY_TS).is_ok());
        let long = format!("{PY_SIG} v1,{}", "A".repeat(MAX_SIGNATURE_HEADER_BYTES));
        assert_eq!(
            check(&long, PY_TS),
            Err(VerifyError::HeaderTooLarge(SIGNATURE_HEADER))
        );
        let h = headers(
            &"i".repeat(MAX_ID_HEADER_BYTES + 1),
            &PY_TS.to_string(),
            PY_SIG,
        );
        let result = verify(&secrets(PY_SECRET), &h, PY_BODY.as_bytes(), PY_TS);
        assert_eq!(result, Err(VerifyError::HeaderTooLarge(ID_HEADER)));
    }

    #[test]
    fn odd_base64_padding_never_matches() {
        let unpadded = PY_SIG.trim_end_matches('=');
        assert_eq!(check(unpadded, PY_TS), Err(VerifyError::InvalidSignature));
        let extra = format!("{PY_SIG}=");
        assert_eq!(check(&extra, PY_TS), Err(VerifyError::InvalidSignature));
        let url_safe = PY_SIG.replace('+', "-").replace('/', "_");
        if url_safe != PY_SIG {
            assert_eq!(check(&url_safe, PY_TS), Err(VerifyError::InvalidSignature));
        }
    }

    #[test]
    fn timestamps_with_signs_spaces_or_exponents_are_invalid() {
        for ts in [
            "+1750861210",
            "-1750861210",
            " 1750861210",
            "1.75e9",
            "17508612100000000000",
            "abc",
        ] {
            let h = headers(PY_ID, ts, PY_SIG);
            let result = verify(&secrets(PY_SECRET), &h, PY_BODY.as_bytes(), PY_TS);
            assert_eq!(result, Err(VerifyError::InvalidTimestamp), "{ts:?}");
        }
    }
}

//! Identity verification, as Intercom and Chatwoot offer it: a host site
//! vouches for its signed-in user by passing `user_id` and `user_hash`, the
//! hex HMAC-SHA256 of `user_id` keyed with the operator's identity secret,
//! computed on the site's own server (the secret never reaches a browser).
//! A verified user is one visitor, so every device shows one conversation.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ApiError;

pub const MAX_USER_ID_CHARS: usize = 255;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], user_id: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(user_id.as_bytes());
    mac
}

/// The `user_hash` a host site computes for `user_id` (lower-case hex).
pub fn user_hash(secret: &[u8], user_id: &str) -> String {
    hex::encode(mac(secret, user_id).finalize().into_bytes())
}

/// Whether `user_hash` is right for `user_id`, compared in constant time.
pub fn verify(secret: &[u8], user_id: &str, user_hash: &str) -> bool {
    match hex::decode(user_hash.trim()) {
        Ok(given) => mac(secret, user_id).verify_slice(&given).is_ok(),
        Err(_) => false,
    }
}

/// The verified user id of a `POST /api/visitors`, if it names one.
pub fn verified_user<'a>(
    secret: Option<&[u8]>,
    user_id: Option<&'a str>,
    user_hash: Option<&str>,
) -> Result<Option<&'a str>, ApiError> {
    let Some(user_id) = user_id else {
        return match user_hash {
            None => Ok(None),
            Some(_) => Err(ApiError::bad_request(
                "invalid_request",
                "user_hash was sent without user_id",
            )),
        };
    };
    let chars = user_id.chars().count();
    if chars == 0 || chars > MAX_USER_ID_CHARS {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            "user_id must be 1 to 255 characters",
        ));
    }
    if user_id.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            "user_id must not contain the NUL character",
        ));
    }
    let Some(secret) = secret else {
        return Err(ApiError::bad_request(
            "identity_verification_disabled",
            "identity verification is not enabled on this server; leave out user_id",
        ));
    };
    match user_hash {
        Some(hash) if verify(secret, user_id, hash) => Ok(Some(user_id)),
        Some(_) => Err(ApiError::forbidden(
            "invalid_user_hash",
            "user_hash is not the HMAC-SHA256 of user_id with this server's identity secret",
        )),
        None => Err(ApiError::forbidden(
            "invalid_user_hash",
            "user_hash is required with user_id",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"identity-secret";

    fn code(e: ApiError) -> &'static str {
        match e {
            ApiError::BadRequest { code, .. } | ApiError::Forbidden { code, .. } => code,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn matches_a_known_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            user_hash(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn accepts_the_right_hash_in_either_case_and_refuses_others() {
        let hash = user_hash(SECRET, "user-42");
        assert!(verify(SECRET, "user-42", &hash));
        assert!(verify(SECRET, "user-42", &hash.to_uppercase()));
        assert!(!verify(SECRET, "user-43", &hash));
        assert!(!verify(b"other secret", "user-42", &hash));
        assert!(!verify(SECRET, "user-42", &hash[..62]));
        assert!(!verify(SECRET, "user-42", "not hex"));
        assert!(!verify(SECRET, "user-42", ""));
    }

    #[test]
    fn tells_each_refusal_apart() {
        let hash = user_hash(SECRET, "u1");
        assert_eq!(
            verified_user(Some(SECRET), Some("u1"), Some(&hash)).unwrap(),
            Some("u1")
        );
        assert_eq!(verified_user(Some(SECRET), None, None).unwrap(), None);
        assert_eq!(verified_user(None, None, None).unwrap(), None);
        let refused = |s, u, h| code(verified_user(s, u, h).unwrap_err());
        assert_eq!(
            refused(Some(SECRET), Some("u1"), Some("00")),
            "invalid_user_hash"
        );
        assert_eq!(refused(Some(SECRET), Some("u1"), None), "invalid_user_hash");
        assert_eq!(
            refused(None, Some("u1"), Some(&hash)),
            "identity_verification_disabled"
        );
        assert_eq!(refused(Some(SECRET), None, Some(&hash)), "invalid_request");
        assert_eq!(
            refused(Some(SECRET), Some(""), Some(&hash)),
            "invalid_user_id"
        );
        let long = "x".repeat(256);
        assert_eq!(
            refused(Some(SECRET), Some(&long), Some(&hash)),
            "invalid_user_id"
        );
    }
}

//! The fuzz targets of `fuzz/` as ordinary, deterministic property tests:
//! hundreds of thousands of inputs, mutated from a seed corpus by a seeded
//! generator, through the three decoders that face the internet. None may
//! panic; every refusal must be an error value. Runs in seconds with
//! `cargo test --lib fuzz_props` on stable (cargo-fuzz needs nightly).

use http::{HeaderMap, HeaderValue};

use crate::{
    protocol::customer_frames::ClientFrame,
    webhooks::{event, signature},
};

/// xorshift64*: deterministic, so a failure reproduces from its iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"-1",
    b"1e400",
    b"99999999999999999999",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3\x28",
    b"\"type\"",
    b"\"message\"",
    b"\"hello\"",
    b"\"data\"",
    b"\"id\"",
    b"v1,",
    b"=",
    b" ",
    b"\n",
    b"\0",
];

/// One mutation of `input`: flip, insert, delete, splice a token, or truncate.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, token.iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out
}

const ITERATIONS: usize = 200_000;

#[test]
fn the_client_frame_decoder_never_panics() {
    let seeds: &[&[u8]] = &[
        br#"{"type":"hello","token":"hlv_abc","after_seq":3}"#,
        br#"{"type":"message","client_id":"c1","text":"hi"}"#,
        br#"{"type":"ping"}"#,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..ITERATIONS {
        let input = mutate(&mut rng, seeds[i % seeds.len()]);
        if let Ok(text) = std::str::from_utf8(&input) {
            if let Ok(ClientFrame::Message { client_id, text }) = ClientFrame::parse(text) {
                assert!(!client_id.is_empty() && !text.trim().is_empty(), "{i}");
            }
        }
    }
}

#[test]
fn the_webhook_event_decoder_never_panics() {
    let seeds: &[&[u8]] = &[
        br#"{"id":"evt_1","object":"event","type":"response.completed","data":{"id":"resp_1"}}"#,
        br#"{"type":"batch.completed","data":{"id":"b"}}"#,
    ];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for i in 0..ITERATIONS {
        let input = mutate(&mut rng, seeds[i % seeds.len()]);
        if let Ok(e) = event::decode(&input) {
            let id = e.payload["data"]["id"].as_str();
            assert!(!e.handled || id.is_some_and(|s| !s.is_empty()), "{i}");
        }
    }
}

#[test]
fn the_signature_verifier_never_panics_and_never_accepts_a_mutation() {
    let secret = signature::WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let body = br#"{"type":"response.completed","data":{"id":"resp_1"}}"#;
    let good = secret.sign("wh_1", "1700000000", body);
    let mut rng = Rng(0xA076_1D64_78BD_642F);
    for i in 0..ITERATIONS / 2 {
        let mut headers = HeaderMap::new();
        let id = mutate(&mut rng, b"wh_1");
        let ts = mutate(&mut rng, b"1700000000");
        let sig = mutate(&mut rng, good.as_bytes());
        for (name, value) in [
            (signature::ID_HEADER, id.clone()),
            (signature::TIMESTAMP_HEADER, ts.clone()),
            (signature::SIGNATURE_HEADER, sig.clone()),
        ] {
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                headers.append(name, v);
                if rng.below(50) == 0 {
                    headers.append(name, HeaderValue::from_static("x"));
                }
            }
        }
        let mutated_body = if rng.below(2) == 0 {
            mutate(&mut rng, body)
        } else {
            body.to_vec()
        };
        let result = signature::verify(
            std::slice::from_ref(&secret),
            &headers,
            &mutated_body,
            1_700_000_000,
        );
        if result.is_ok() {
            // Only the genuine triple (or an equivalent list holding the
            // genuine entry) may pass.
            assert_eq!(id, b"wh_1", "{i}");
            assert_eq!(ts, b"1700000000", "{i}");
            assert_eq!(mutated_body, body, "{i}");
            let sig = String::from_utf8(sig).unwrap();
            assert!(sig.split(' ').any(|e| e == good), "{i}: {sig}");
        }
    }
}

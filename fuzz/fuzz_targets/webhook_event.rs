//! Arbitrary bytes through the webhook event decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = helpline::webhooks::event::decode(data) {
        assert!(!event.handled || event.payload["data"]["id"].is_string());
    }
});

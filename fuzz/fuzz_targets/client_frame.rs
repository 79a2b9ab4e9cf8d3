//! Arbitrary text through the customer frame decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = helpline::protocol::customer_frames::ClientFrame::parse(text);
});

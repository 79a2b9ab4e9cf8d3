//! Arbitrary text through the customer frame decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = helpline::chat::frames::ClientFrame::parse(text);
});

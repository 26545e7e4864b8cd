//! Request decoding: send, participant and migrate bodies.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meshchat_worker::fuzz::request_bodies(data));

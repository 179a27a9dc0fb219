//! Request heads from clients, as the proxy's own HTTP/1 server reads them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hypache::server::fuzzing::request_head(data));

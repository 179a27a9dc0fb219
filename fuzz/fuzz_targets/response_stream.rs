//! Backend answers as the proxy's own HTTP/1 client reads them: the head, then the body's framing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hypache::upstream::fuzzing::response_stream(data));

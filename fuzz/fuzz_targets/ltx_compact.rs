#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| litestream_fuzz::check_compact::merge(data));

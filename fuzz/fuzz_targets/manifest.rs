//! The MANIFEST from arbitrary bytes: both slots, and one slot alone. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringdb::format::manifest::{Manifest, decode_file};

fuzz_target!(|data: &[u8]| {
    let _ = decode_file(data);
    let _ = Manifest::decode(data);
});

//! Router config files: loading YAML text returns a config or a clean error naming the
//! problem, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchyard::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_yaml(Path::new("/fuzz/config.yaml"), text);
    }
});

//! The policies shipped inside the binary: every crate under `policies/`, built to a
//! `wasm32-wasip2` component by `host/build.rs` and embedded here by name.

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

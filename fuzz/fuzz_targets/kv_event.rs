//! KV-event payloads (msgpack, as an engine publishes them): both decoders must agree
//! (whatever the fast one reads, the general one reads the same; it declines every
//! other shape and the general one decides), neither may panic or allocate from a
//! declared length, and applying the batch to an index must stay within its bounds.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use switchyard_kv::{Counters, Index, IndexSink, Limits, Sink, assert_decoders_agree};

fuzz_target!(|payload: &[u8]| {
    assert_decoders_agree(payload);
    let index = Arc::new(parking_lot::RwLock::new(Index::new(2, None)));
    let slot = index.write().add_slot(Some(64)).expect("a free slot");
    let limits = Limits {
        max_hashes_per_event: 256,
        ..Limits::default()
    };
    let counters = Arc::new(Counters::default());
    let mut sink = IndexSink::new(index, slot, "m".into(), counters, None, limits);
    sink.apply(payload);
});

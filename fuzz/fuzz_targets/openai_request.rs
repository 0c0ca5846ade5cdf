//! Client request bodies for the OpenAI endpoints: the first byte picks the endpoint
//! (even: chat, odd: completions), the rest is the body. Parsing returns the request or
//! a clean `ApiError`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::{Endpoint, Parsed};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = if selector % 2 == 0 {
        Endpoint::Chat
    } else {
        Endpoint::Completions
    };
    let _ = Parsed::from_openai(endpoint, bytes::Bytes::copy_from_slice(body));
});

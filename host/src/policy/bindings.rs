//! Host bindings generated from `wit/`, one module per world. The shared `types` and
//! `host` interfaces are generated once (by the filter world) and reused by the others.

pub mod filter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "filter",
    });
}

pub mod scorer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scorer",
        with: {
            "switchyard:policy/types": super::filter::switchyard::policy::types,
            "switchyard:policy/host": super::filter::switchyard::policy::host,
        },
    });
}

pub mod placer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "placer",
        with: {
            "switchyard:policy/types": super::filter::switchyard::policy::types,
            "switchyard:policy/host": super::filter::switchyard::policy::host,
        },
    });
}

pub use filter::switchyard::policy::{host, types};

//! Generated bindings for `switchyard:policy@0.3.1`. Authors never use these directly:
//! the export macros and the types in the crate root wrap them.

/// The `filter` world; it also generates the shared `types` and `host` interfaces.
#[allow(clippy::too_many_arguments)] // generated: the 16 flat core arguments of a call
pub mod filter {
    wit_bindgen::generate!({
        path: "wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "export_filter_world",
        default_bindings_module: "::switchyard_policy_sdk::wit::filter",
    });
}

/// The `scorer` world, reusing the filter world's shared interfaces.
#[allow(clippy::too_many_arguments)] // generated: the 16 flat core arguments of a call
pub mod scorer {
    wit_bindgen::generate!({
        path: "wit",
        world: "scorer",
        pub_export_macro: true,
        export_macro_name: "export_scorer_world",
        default_bindings_module: "::switchyard_policy_sdk::wit::scorer",
        with: {
            "switchyard:policy/types@0.3.1": super::filter::switchyard::policy::types,
            "switchyard:policy/host@0.3.1": super::filter::switchyard::policy::host,
        },
    });
}

/// The `placer` world, reusing the filter world's shared interfaces.
#[allow(clippy::too_many_arguments)] // generated: the 16 flat core arguments of a call
pub mod placer {
    wit_bindgen::generate!({
        path: "wit",
        world: "placer",
        pub_export_macro: true,
        export_macro_name: "export_placer_world",
        default_bindings_module: "::switchyard_policy_sdk::wit::placer",
        with: {
            "switchyard:policy/types@0.3.1": super::filter::switchyard::policy::types,
            "switchyard:policy/host@0.3.1": super::filter::switchyard::policy::host,
        },
    });
}

pub use filter::switchyard::policy::{host, types};

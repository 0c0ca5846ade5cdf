//! End-to-end tests: the real `switchyard` binary on loopback in front of in-process
//! OpenAI-compatible test backends and real engines (`llama-server`, see `llamacpp`).
//!
//! One binary, one `mod` per area. New tests go in the module of their area; anything
//! shared (processes, backends, configs) goes in `harness`.

mod harness;

mod admin;
mod admin_contract;
mod client_api;
mod faults;
mod listeners;
mod llamacpp;
mod load;
mod persistence;
mod python;
mod python_policy;
mod replicas;
mod resume;
mod routing;
mod tenants;

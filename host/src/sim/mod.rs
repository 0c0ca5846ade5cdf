//! A simulated vLLM-like backend.
pub mod cache;
pub mod latency;
pub mod profile;
pub mod scheduler;

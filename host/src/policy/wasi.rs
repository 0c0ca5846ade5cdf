//! The little of WASI a Rust `std` guest touches when it panics, provided without
//! granting anything: an empty `wasi:cli/environment` (no variables, no arguments, no
//! working directory), and `wasi:cli/stdout` and `wasi:cli/stderr` streams whose writes
//! land in the call's bounded log ([`Output::capture`]) and never block (their
//! pollables are always ready). Without them the panic hook's
//! read of `RUST_BACKTRACE` traps first ("unknown import: wasi:cli/environment...") and
//! the panic message is lost; with them the fault says that the policy panicked, and
//! where. Every other WASI import (files, sockets, clocks, random, stdin, exit) stays
//! refused at upload or a trapping stub.
//!
//! Definitions are made under the exact versioned names the component imports, before
//! the remaining imports are stubbed as traps.

use wasmtime::component::{Component, ComponentType, Lift, Linker, Lower, Resource, ResourceType};
use wasmtime::{Engine, StoreContextMut};

/// A guest's standard output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdio {
    /// `wasi:cli/stdout`.
    Stdout = 1,
    /// `wasi:cli/stderr`.
    Stderr = 2,
}

/// Where a store files what its guest writes to stdout and stderr.
pub(crate) trait Output {
    /// Files `bytes` the guest wrote to `to`.
    fn capture(&mut self, to: Stdio, bytes: &[u8]);
}

/// An output stream the guest holds: its representation is the [`Stdio`] it writes to.
enum OutputStream {}

/// `wasi:io/error`'s `error`; never made, named by `stream-error`.
enum IoError {}

/// `wasi:io/poll`'s `pollable`, as an output stream's `subscribe` returns it: always
/// ready, since writes never block.
enum Pollable {}

/// `wasi:io/streams`'s `stream-error`. Writes never fail, so it is never returned; the
/// type is what the imports are checked against.
#[derive(ComponentType, Lift, Lower)]
#[component(variant)]
#[allow(dead_code, reason = "the shape of the WIT type; writes never fail")]
enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

/// Bytes a guest may write per `write` call, as `check-write` reports.
const WRITE_BUDGET: u64 = 4096;

/// Defines the shims for every import of `component` they cover.
///
/// # Errors
///
/// When the linker refuses a definition.
pub(crate) fn define<T: Output + 'static>(
    linker: &mut Linker<T>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    let names: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    for name in &names {
        let Some((interface, _version)) = name.split_once('@') else {
            continue;
        };
        let mut inst = linker.instance(name)?;
        match interface {
            "wasi:cli/environment" => {
                inst.func_wrap("get-environment", |_, (): ()| {
                    Ok((Vec::<(String, String)>::new(),))
                })?;
                inst.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
                inst.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
            }
            "wasi:cli/stdout" => {
                inst.resource("output-stream", output_stream(), |_, _| Ok(()))?;
                inst.func_wrap("get-stdout", |_, (): ()| {
                    Ok((Resource::<OutputStream>::new_own(Stdio::Stdout as u32),))
                })?;
            }
            "wasi:cli/stderr" => {
                inst.resource("output-stream", output_stream(), |_, _| Ok(()))?;
                inst.func_wrap("get-stderr", |_, (): ()| {
                    Ok((Resource::<OutputStream>::new_own(Stdio::Stderr as u32),))
                })?;
            }
            "wasi:io/error" => {
                inst.resource("error", io_error(), |_, _| Ok(()))?;
            }
            "wasi:io/poll" => {
                inst.resource("pollable", pollable(), |_, _| Ok(()))?;
                inst.func_wrap(
                    "[method]pollable.ready",
                    |_, (_,): (Resource<Pollable>,)| Ok((true,)),
                )?;
                inst.func_wrap(
                    "[method]pollable.block",
                    |_, (_,): (Resource<Pollable>,)| Ok(()),
                )?;
                inst.func_wrap("poll", |_, (all,): (Vec<Resource<Pollable>>,)| {
                    Ok(((0..all.len() as u32).collect::<Vec<u32>>(),))
                })?;
            }
            "wasi:io/streams" => {
                inst.resource("error", io_error(), |_, _| Ok(()))?;
                inst.resource("pollable", pollable(), |_, _| Ok(()))?;
                inst.resource("output-stream", output_stream(), |_, _| Ok(()))?;
                inst.func_wrap(
                    "[method]output-stream.subscribe",
                    |_, (_,): (Resource<OutputStream>,)| Ok((Resource::<Pollable>::new_own(0),)),
                )?;
                inst.func_wrap(
                    "[method]output-stream.check-write",
                    |_, (_,): (Resource<OutputStream>,)| {
                        Ok((Ok::<u64, StreamError>(WRITE_BUDGET),))
                    },
                )?;
                for method in [
                    "[method]output-stream.write",
                    "[method]output-stream.blocking-write-and-flush",
                ] {
                    inst.func_wrap(method, write)?;
                }
                for method in [
                    "[method]output-stream.flush",
                    "[method]output-stream.blocking-flush",
                ] {
                    inst.func_wrap(method, |_, (_,): (Resource<OutputStream>,)| {
                        Ok((Ok::<(), StreamError>(()),))
                    })?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

// NB: an interface that `use`s a resource re-exports it under its own name (streams'
// `error`, stderr's `output-stream`); each re-export must be the same host type.
fn output_stream() -> ResourceType {
    ResourceType::host::<OutputStream>()
}

fn io_error() -> ResourceType {
    ResourceType::host::<IoError>()
}

fn pollable() -> ResourceType {
    ResourceType::host::<Pollable>()
}

fn write<T: Output>(
    mut store: StoreContextMut<'_, T>,
    (stream, bytes): (Resource<OutputStream>, Vec<u8>),
) -> wasmtime::Result<(Result<(), StreamError>,)> {
    let to = if stream.rep() == Stdio::Stdout as u32 {
        Stdio::Stdout
    } else {
        Stdio::Stderr
    };
    store.data_mut().capture(to, &bytes);
    Ok((Ok(()),))
}

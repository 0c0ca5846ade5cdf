//! A virtual, deterministic WASI for policies in any language: what a Rust `std` guest
//! or an interpreter (componentize-py's CPython) touches, provided without granting
//! anything from the host.
//!
//! | interface | what the guest gets |
//! |---|---|
//! | `wasi:cli/environment` | no variables, no arguments, no working directory |
//! | `wasi:cli/stdout`, `stderr` | streams whose writes land in the call's bounded log ([`Output::capture`]) |
//! | `wasi:cli/stdin` | a stream that is closed |
//! | `wasi:cli/terminal-*` | not a terminal |
//! | `wasi:cli/exit` | a trap |
//! | `wasi:clocks/wall-clock` | [`VIRTUAL_EPOCH_S`] at the start of every call, never the host's time |
//! | `wasi:clocks/monotonic-clock` | 0 at the start of every call; a wait returns at once and moves the clock by its length |
//! | `wasi:random/*` | bytes from a generator seeded at the start of every call from the request id (a constant outside decisions) |
//! | `wasi:filesystem/preopens` | no directories, so no file can be opened |
//! | `wasi:sockets/*` | a socket or a name lookup is refused (`access-denied`) |
//! | `wasi:io/poll`, `streams` | pollables always ready: nothing blocks |
//!
//! Every other function of these interfaces (all of `wasi:filesystem/types`, which needs
//! a descriptor the guest can never get; the socket methods, which need a socket) is a
//! stub that traps when called. So the same input gives the same output, whatever the host's clock,
//! files or network, and no call can block the thread deciding.
//!
//! Definitions are made under the exact versioned names the component imports, before
//! the remaining imports are stubbed as traps.

use wasmtime::component::{
    Component, ComponentType, Lift, Linker, LinkerInstance, Lower, Resource, ResourceType,
    types::ComponentItem,
};
use wasmtime::{Engine, StoreContextMut};

/// A guest's standard output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdio {
    /// `wasi:cli/stdout`.
    Stdout = 1,
    /// `wasi:cli/stderr`.
    Stderr = 2,
}

/// What a store gives the virtual WASI: where guest output goes, and the call's
/// virtual clock and random stream.
pub(crate) trait Output {
    /// Files `bytes` the guest wrote to `to`.
    fn capture(&mut self, to: Stdio, bytes: &[u8]);

    /// The call's virtual clock and random stream.
    fn virtual_state(&mut self) -> &mut Virtual;
}

/// Wall-clock seconds every call starts at: 2025-01-01T00:00:00Z.
pub(crate) const VIRTUAL_EPOCH_S: u64 = 1_735_689_600;

/// Largest `get-random-bytes` a guest may ask for in one call; more traps.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Mixed into the request id, so the WASI stream differs from the SDKs' `Request::rng`.
const RANDOM_DOMAIN: u64 = 0x5741_5349_5241_4e44;

/// The per-store state of the virtual WASI: a clock and a random stream, both reset
/// before every call ([`Virtual::reset`]), so nothing carries over from one call to
/// the next.
#[derive(Debug, Default)]
pub(crate) struct Virtual {
    /// Nanoseconds the guest has waited this call.
    elapsed_ns: u64,
    /// SplitMix64 state.
    random: u64,
}

impl Virtual {
    /// Rewinds the clock to the start and reseeds the random stream with `seed` (the
    /// request id, or 0 outside decisions).
    pub(crate) fn reset(&mut self, seed: u64) {
        self.elapsed_ns = 0;
        self.random = seed ^ RANDOM_DOMAIN;
    }

    fn wait(&mut self, ns: u64) {
        self.elapsed_ns = self.elapsed_ns.saturating_add(ns);
    }

    fn wall(&self) -> Datetime {
        Datetime {
            seconds: VIRTUAL_EPOCH_S + self.elapsed_ns / 1_000_000_000,
            nanoseconds: (self.elapsed_ns % 1_000_000_000) as u32,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            wasmtime::bail!("policy asked for {len} random bytes at once, over {MAX_RANDOM_BYTES}");
        }
        let mut out = Vec::with_capacity(len as usize);
        while out.len() < len as usize {
            let word = self.next_u64().to_le_bytes();
            let take = (len as usize - out.len()).min(8);
            out.extend_from_slice(&word[..take]);
        }
        Ok(out)
    }
}

// Host types of the resources the shims hand out. A resource the guest imports under
// several interfaces (streams' `output-stream` is also stdout's) is defined as the same
// type everywhere by its name (`resource_type`).

/// An output stream the guest holds: its representation is the [`Stdio`] it writes to.
enum OutputStream {}
/// The input stream of `wasi:cli/stdin`; always closed.
enum InputStream {}
/// `wasi:io/error`'s `error`; never made.
enum IoError {}
/// `wasi:io/poll`'s `pollable`: always ready.
enum Pollable {}
/// `wasi:filesystem/types`' `descriptor`; never made, there are no preopens.
enum Descriptor {}
/// `wasi:cli/terminal-input`'s `terminal-input`; never made.
enum TerminalInput {}
/// `wasi:cli/terminal-output`'s `terminal-output`; never made.
enum TerminalOutput {}
/// `wasi:sockets/network`'s `network`: handed out, but no socket can be made on it.
enum Network {}
/// `wasi:sockets/tcp`'s `tcp-socket`; never made.
enum TcpSocket {}
/// `wasi:sockets/udp`'s `udp-socket`; never made.
enum UdpSocket {}
/// `wasi:sockets/ip-name-lookup`'s `resolve-address-stream`; never made.
enum ResolveAddressStream {}

/// The host type of an imported resource the shims use, by its name.
fn resource_type(name: &str) -> Option<ResourceType> {
    Some(match name {
        "output-stream" => ResourceType::host::<OutputStream>(),
        "input-stream" => ResourceType::host::<InputStream>(),
        "error" => ResourceType::host::<IoError>(),
        "pollable" => ResourceType::host::<Pollable>(),
        "descriptor" => ResourceType::host::<Descriptor>(),
        "terminal-input" => ResourceType::host::<TerminalInput>(),
        "terminal-output" => ResourceType::host::<TerminalOutput>(),
        "network" => ResourceType::host::<Network>(),
        "tcp-socket" => ResourceType::host::<TcpSocket>(),
        "udp-socket" => ResourceType::host::<UdpSocket>(),
        "resolve-address-stream" => ResourceType::host::<ResolveAddressStream>(),
        _ => return None,
    })
}

/// `wasi:io/streams`'s `stream-error`.
#[derive(ComponentType, Lift, Lower)]
#[component(variant)]
#[allow(
    dead_code,
    reason = "the shape of the WIT type; only `closed` is returned"
)]
enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

/// `wasi:sockets/network`'s `error-code`; only `access-denied` is returned.
#[derive(Clone, Copy, ComponentType, Lift, Lower)]
#[component(enum)]
#[repr(u8)]
#[allow(
    dead_code,
    reason = "the shape of the WIT type; only `access-denied` is returned"
)]
enum SocketError {
    #[component(name = "unknown")]
    Unknown,
    #[component(name = "access-denied")]
    AccessDenied,
    #[component(name = "not-supported")]
    NotSupported,
    #[component(name = "invalid-argument")]
    InvalidArgument,
    #[component(name = "out-of-memory")]
    OutOfMemory,
    #[component(name = "timeout")]
    Timeout,
    #[component(name = "concurrency-conflict")]
    ConcurrencyConflict,
    #[component(name = "not-in-progress")]
    NotInProgress,
    #[component(name = "would-block")]
    WouldBlock,
    #[component(name = "invalid-state")]
    InvalidState,
    #[component(name = "new-socket-limit")]
    NewSocketLimit,
    #[component(name = "address-not-bindable")]
    AddressNotBindable,
    #[component(name = "address-in-use")]
    AddressInUse,
    #[component(name = "remote-unreachable")]
    RemoteUnreachable,
    #[component(name = "connection-refused")]
    ConnectionRefused,
    #[component(name = "connection-reset")]
    ConnectionReset,
    #[component(name = "connection-aborted")]
    ConnectionAborted,
    #[component(name = "datagram-too-large")]
    DatagramTooLarge,
    #[component(name = "name-unresolvable")]
    NameUnresolvable,
    #[component(name = "temporary-resolver-failure")]
    TemporaryResolverFailure,
    #[component(name = "permanent-resolver-failure")]
    PermanentResolverFailure,
}

/// `wasi:sockets/network`'s `ip-address-family`.
#[derive(Clone, Copy, ComponentType, Lift, Lower)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code, reason = "the shape of the WIT type; never looked at")]
enum AddressFamily {
    #[component(name = "ipv4")]
    Ipv4,
    #[component(name = "ipv6")]
    Ipv6,
}

/// `wasi:clocks/wall-clock`'s `datetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ComponentType, Lift, Lower)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// Bytes a guest may write per `write` call, as `check-write` reports.
const WRITE_BUDGET: u64 = 4096;

/// Defines the shims for every import of `component` they cover.
///
/// # Errors
///
/// When the linker refuses a definition (a WASI version whose types differ from the
/// shims').
pub(crate) fn define<T: Output + 'static>(
    linker: &mut Linker<T>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let (Some((interface, _version)), ComponentItem::ComponentInstance(instance)) =
            (name.split_once('@'), import.ty)
        else {
            continue;
        };
        if !interface.starts_with("wasi:") {
            continue;
        }
        let mut inst = linker.instance(name)?;
        for (item, export) in instance.exports(engine) {
            if let (ComponentItem::Resource(_), Some(host)) = (export.ty, resource_type(item)) {
                inst.resource(item, host, |_, _| Ok(()))?;
            }
        }
        define_interface(&mut inst, interface)?;
    }
    Ok(())
}

fn define_interface<T: Output + 'static>(
    inst: &mut LinkerInstance<'_, T>,
    interface: &str,
) -> wasmtime::Result<()> {
    match interface {
        "wasi:cli/environment" => {
            inst.func_wrap("get-environment", |_, (): ()| {
                Ok((Vec::<(String, String)>::new(),))
            })?;
            inst.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
            inst.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
        }
        "wasi:cli/stdout" => {
            inst.func_wrap("get-stdout", |_, (): ()| {
                Ok((Resource::<OutputStream>::new_own(Stdio::Stdout as u32),))
            })?;
        }
        "wasi:cli/stderr" => {
            inst.func_wrap("get-stderr", |_, (): ()| {
                Ok((Resource::<OutputStream>::new_own(Stdio::Stderr as u32),))
            })?;
        }
        "wasi:cli/stdin" => {
            inst.func_wrap("get-stdin", |_, (): ()| {
                Ok((Resource::<InputStream>::new_own(0),))
            })?;
        }
        "wasi:cli/exit" => {
            inst.func_wrap(
                "exit",
                |_, (status,): (Result<(), ()>,)| -> wasmtime::Result<()> {
                    let status = if status.is_ok() { "success" } else { "failure" };
                    wasmtime::bail!("policy called exit ({status})")
                },
            )?;
        }
        "wasi:cli/terminal-stdin" => {
            inst.func_wrap("get-terminal-stdin", |_, (): ()| {
                Ok((None::<Resource<TerminalInput>>,))
            })?;
        }
        "wasi:cli/terminal-stdout" => {
            inst.func_wrap("get-terminal-stdout", |_, (): ()| {
                Ok((None::<Resource<TerminalOutput>>,))
            })?;
        }
        "wasi:cli/terminal-stderr" => {
            inst.func_wrap("get-terminal-stderr", |_, (): ()| {
                Ok((None::<Resource<TerminalOutput>>,))
            })?;
        }
        "wasi:clocks/wall-clock" => {
            inst.func_wrap("now", |mut store: StoreContextMut<'_, T>, (): ()| {
                Ok((store.data_mut().virtual_state().wall(),))
            })?;
            inst.func_wrap("resolution", |_, (): ()| {
                Ok((Datetime {
                    seconds: 0,
                    nanoseconds: 1,
                },))
            })?;
        }
        "wasi:clocks/monotonic-clock" => {
            inst.func_wrap("now", |mut store: StoreContextMut<'_, T>, (): ()| {
                Ok((store.data_mut().virtual_state().elapsed_ns,))
            })?;
            inst.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
            inst.func_wrap(
                "subscribe-instant",
                |mut store: StoreContextMut<'_, T>, (when,): (u64,)| {
                    let clock = store.data_mut().virtual_state();
                    clock.elapsed_ns = clock.elapsed_ns.max(when);
                    Ok((Resource::<Pollable>::new_own(0),))
                },
            )?;
            inst.func_wrap(
                "subscribe-duration",
                |mut store: StoreContextMut<'_, T>, (ns,): (u64,)| {
                    store.data_mut().virtual_state().wait(ns);
                    Ok((Resource::<Pollable>::new_own(0),))
                },
            )?;
        }
        "wasi:random/random" | "wasi:random/insecure" => {
            let (bytes, word) = if interface == "wasi:random/random" {
                ("get-random-bytes", "get-random-u64")
            } else {
                ("get-insecure-random-bytes", "get-insecure-random-u64")
            };
            inst.func_wrap(
                bytes,
                |mut store: StoreContextMut<'_, T>, (len,): (u64,)| {
                    Ok((store.data_mut().virtual_state().bytes(len)?,))
                },
            )?;
            inst.func_wrap(word, |mut store: StoreContextMut<'_, T>, (): ()| {
                Ok((store.data_mut().virtual_state().next_u64(),))
            })?;
        }
        "wasi:random/insecure-seed" => {
            inst.func_wrap(
                "insecure-seed",
                |mut store: StoreContextMut<'_, T>, (): ()| {
                    let random = store.data_mut().virtual_state();
                    Ok(((random.next_u64(), random.next_u64()),))
                },
            )?;
        }
        "wasi:filesystem/preopens" => {
            inst.func_wrap("get-directories", |_, (): ()| {
                Ok((Vec::<(Resource<Descriptor>, String)>::new(),))
            })?;
        }
        "wasi:io/poll" => {
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
        "wasi:io/streams" => define_streams(inst)?,
        // No network: a socket or a name lookup is refused as `access-denied`, which
        // the guest's libc reports as an ordinary error (Python's `PermissionError`).
        "wasi:sockets/instance-network" => {
            inst.func_wrap("instance-network", |_, (): ()| {
                Ok((Resource::<Network>::new_own(0),))
            })?;
        }
        "wasi:sockets/tcp-create-socket" => {
            inst.func_wrap("create-tcp-socket", |_, (_,): (AddressFamily,)| {
                Ok((Err::<Resource<TcpSocket>, _>(SocketError::AccessDenied),))
            })?;
        }
        "wasi:sockets/udp-create-socket" => {
            inst.func_wrap("create-udp-socket", |_, (_,): (AddressFamily,)| {
                Ok((Err::<Resource<UdpSocket>, _>(SocketError::AccessDenied),))
            })?;
        }
        "wasi:sockets/ip-name-lookup" => {
            inst.func_wrap(
                "resolve-addresses",
                |_, (_, _): (Resource<Network>, String)| {
                    Ok((Err::<Resource<ResolveAddressStream>, _>(
                        SocketError::AccessDenied,
                    ),))
                },
            )?;
        }
        _ => {}
    }
    Ok(())
}

fn define_streams<T: Output + 'static>(inst: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    inst.func_wrap(
        "[method]output-stream.subscribe",
        |_, (_,): (Resource<OutputStream>,)| Ok((Resource::<Pollable>::new_own(0),)),
    )?;
    inst.func_wrap(
        "[method]output-stream.check-write",
        |_, (_,): (Resource<OutputStream>,)| Ok((Ok::<u64, StreamError>(WRITE_BUDGET),)),
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
    // stdin: always at its end.
    inst.func_wrap(
        "[method]input-stream.subscribe",
        |_, (_,): (Resource<InputStream>,)| Ok((Resource::<Pollable>::new_own(0),)),
    )?;
    for method in [
        "[method]input-stream.read",
        "[method]input-stream.blocking-read",
    ] {
        inst.func_wrap(method, |_, (_, _): (Resource<InputStream>, u64)| {
            Ok((Err::<Vec<u8>, StreamError>(StreamError::Closed),))
        })?;
    }
    for method in [
        "[method]input-stream.skip",
        "[method]input-stream.blocking-skip",
    ] {
        inst.func_wrap(method, |_, (_, _): (Resource<InputStream>, u64)| {
            Ok((Err::<u64, StreamError>(StreamError::Closed),))
        })?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_virtual_clock_starts_at_the_epoch_every_call_and_moves_only_by_waits() {
        let mut v = Virtual::default();
        v.reset(7);
        assert_eq!(
            v.wall(),
            Datetime {
                seconds: VIRTUAL_EPOCH_S,
                nanoseconds: 0
            }
        );
        v.wait(1_500_000_000);
        assert_eq!(v.wall().seconds, VIRTUAL_EPOCH_S + 1);
        assert_eq!(v.wall().nanoseconds, 500_000_000);
        v.wait(u64::MAX);
        assert_eq!(v.elapsed_ns, u64::MAX, "saturates");
        v.reset(7);
        assert_eq!(v.elapsed_ns, 0);
    }

    #[test]
    fn random_bytes_replay_with_the_seed_and_are_bounded() {
        let mut a = Virtual::default();
        let mut b = Virtual::default();
        a.reset(42);
        b.reset(42);
        let first = a.bytes(13).unwrap();
        assert_eq!(first, b.bytes(13).unwrap());
        assert_eq!(first.len(), 13);
        b.reset(43);
        a.reset(42);
        assert_eq!(a.bytes(13).unwrap(), first, "a reset replays");
        assert_ne!(b.bytes(13).unwrap(), first, "another seed differs");
        assert!(a.bytes(MAX_RANDOM_BYTES + 1).is_err());
    }
}

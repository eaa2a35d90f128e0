//! Whether a target's driver and at least one device are present, asked of the driver
//! library itself before cubecl is: cubecl's bindings panic where either is missing,
//! and a program that wants to say "no GPU here" should not have to catch a panic.

use crate::codegen::emit::Target;

/// Why a target cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no {target} driver: {library} could not be loaded ({reason})")]
    NoDriver {
        target: &'static str,
        library: &'static str,
        reason: String,
    },
    #[error("the {target} driver ({library}) has no `{call}` ({reason})")]
    MissingCall {
        target: &'static str,
        library: &'static str,
        call: &'static str,
        reason: String,
    },
    #[error("the {target} driver's `{call}` failed with status {status}")]
    CallFailed {
        target: &'static str,
        call: &'static str,
        status: i32,
    },
    #[error("the {target} driver sees no device")]
    NoDevice { target: &'static str },
}

/// The driver library of a target and the two calls the probe makes: initialise the
/// driver, count its devices. CUDA's and HIP's have the same shapes.
struct Driver {
    library: &'static str,
    init: &'static str,
    count: &'static str,
}

fn driver(target: Target) -> Driver {
    match target {
        Target::Cuda => Driver {
            library: "libcuda.so.1",
            init: "cuInit",
            count: "cuDeviceGetCount",
        },
        Target::Hip => Driver {
            library: "libamdhip64.so",
            init: "hipInit",
            count: "hipGetDeviceCount",
        },
    }
}

type Init = unsafe extern "C" fn(flags: u32) -> i32;
type Count = unsafe extern "C" fn(count: *mut i32) -> i32;

/// How many devices `target`'s driver sees (at least one), or why it cannot run here.
pub fn devices(target: Target) -> Result<usize, ProbeError> {
    let name = target.name();
    let Driver {
        library,
        init,
        count,
    } = driver(target);
    // SAFETY: the driver library is made to be loaded into any process; loading it
    // runs only its own initialisers.
    let lib = unsafe { libloading::Library::new(library) }.map_err(|e| ProbeError::NoDriver {
        target: name,
        library,
        reason: e.to_string(),
    })?;
    let missing = |call: &'static str| {
        move |e: libloading::Error| ProbeError::MissingCall {
            target: name,
            library,
            call,
            reason: e.to_string(),
        }
    };
    // SAFETY: `cuInit` / `hipInit` take one unsigned flags word and return a status
    // code, as `Init` declares; both accept 0 and may be called more than once.
    let status = unsafe {
        let call: libloading::Symbol<Init> = lib.get(init.as_bytes()).map_err(missing(init))?;
        call(0)
    };
    if status != 0 {
        return Err(ProbeError::CallFailed {
            target: name,
            call: init,
            status,
        });
    }
    let mut devices = 0i32;
    // SAFETY: `cuDeviceGetCount` / `hipGetDeviceCount` write one int through the
    // pointer, which points at `devices`, live for the call.
    let status = unsafe {
        let call: libloading::Symbol<Count> = lib.get(count.as_bytes()).map_err(missing(count))?;
        call(&mut devices)
    };
    if status != 0 {
        return Err(ProbeError::CallFailed {
            target: name,
            call: count,
            status,
        });
    }
    match usize::try_from(devices) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ProbeError::NoDevice { target: name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the driver library the probe says so, naming it; with
    /// one it counts at least one device or says there is none. Never a panic.
    #[test]
    fn the_probe_answers_on_any_machine() {
        for target in [Target::Cuda, Target::Hip] {
            match devices(target) {
                Ok(n) => assert!(n > 0),
                Err(e @ ProbeError::NoDriver { library, .. }) => {
                    assert_eq!(library, driver(target).library);
                    let message = e.to_string();
                    assert!(message.starts_with(&format!("no {} driver: ", target.name())));
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
}

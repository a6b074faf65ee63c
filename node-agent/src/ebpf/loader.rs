//! Loading and attaching the eBPF object with aya, and reading its maps.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{ProgramError, TracePoint};
use aya::{Btf, BtfError, Ebpf, EbpfError, EbpfLoader, Endianness};
use thiserror::Error;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use super::raw::{TokenOpen, decode_event};
use super::{Counters, Hook};

/// The compiled `node-agent-ebpf/tokenguard.bpf.c`, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tokenguard.bpf.o"));

/// Tracefs mount points that aya looks in, in its order.
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The syscall exit tracepoints, by program name in the object and tracepoint name.
const TRACEPOINTS: [Tracepoint; 3] = [
    Tracepoint {
        program: "tg_sys_exit_openat",
        name: "sys_exit_openat",
        required: true,
    },
    Tracepoint {
        program: "tg_sys_exit_openat2",
        name: "sys_exit_openat2",
        required: false,
    },
    // x86_64 kernels keep the legacy open(2), but arm64 and other newer ABIs never had it.
    Tracepoint {
        program: "tg_sys_exit_open",
        name: "sys_exit_open",
        required: false,
    },
];

const EVENTS_MAP: &str = "events";
const COUNTERS_MAP: &str = "counters";
/// Global of the eBPF program that [`ProbeOptions::repeat_window`] sets.
const REPEAT_WINDOW_GLOBAL: &str = "repeat_window_ns";

/// Indexes of the counters map (`enum tg_counter` in `tokenguard.h`).
const COUNTER_LOST: u32 = 0;
const COUNTER_PATH_FILTERED: u32 = 1;
const COUNTER_SUBMITTED: u32 = 2;
const COUNTER_REPEATS: u32 = 3;

/// Settings of the kernel program, fixed when it is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Read-opens of one file by one process within this time of its last event are counted
    /// in [`Counters::repeats`] instead of sent. Zero sends every open.
    pub repeat_window: Duration,
}

impl Default for ProbeOptions {
    /// Sets a one-second window: a process that re-reads its token in a loop costs at most one
    /// event a second, and the agent folds those into one event while a post is in flight.
    fn default() -> Self {
        ProbeOptions {
            repeat_window: Duration::from_secs(1),
        }
    }
}

struct Tracepoint {
    program: &'static str,
    name: &'static str,
    required: bool,
}

/// Error loading the probe or reading its maps.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("Probe::load must run inside a tokio runtime, because the ring buffer is polled by it")]
    NoRuntime,
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing: mount it \
         with `mount -t tracefs nodev /sys/kernel/tracing`, or mount the host's /sys into the \
         container"
    )]
    TracefsMissing,
    #[error(
        "permission denied reading tracefs at {}: run the agent as root, because loading \
         eBPF programs and reading tracefs need CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN",
        path.display()
    )]
    TracefsDenied { path: PathBuf },
    #[error(
        "tracepoint syscalls:{name} not found under {tracefs}: the kernel needs \
         CONFIG_FTRACE_SYSCALLS=y"
    )]
    TracepointMissing {
        name: &'static str,
        tracefs: PathBuf,
    },
    #[error(
        "failed to load the eBPF object: {0}; run as root (or with CAP_BPF, CAP_PERFMON and \
         CAP_SYS_ADMIN) on Linux 5.8 or later with BTF at /sys/kernel/btf/vmlinux"
    )]
    Load(#[source] EbpfError),
    #[error("program {0} is missing from the eBPF object: rebuild the agent")]
    ProgramMissing(&'static str),
    #[error(
        "failed to load or attach program {program} to syscalls:{tracepoint}: {source}; the \
         kernel's verifier log is in the source error"
    )]
    Attach {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {0} is missing from the eBPF object: rebuild the agent")]
    MapMissing(&'static str),
    #[error("failed to open or read map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "failed to read kernel BTF from {path}: {source}; pass a raw BTF file such as /sys/kernel/btf/vmlinux"
    )]
    Btf {
        path: PathBuf,
        #[source]
        source: BtfError,
    },
    #[error("failed to register the ring buffer fd with tokio: {0}")]
    Register(#[source] io::Error),
}

/// The loaded and attached eBPF program. Dropping it detaches the program.
pub struct Probe {
    // Declared first so the ring buffer is dropped before the object that owns the programs.
    events: AsyncFd<RingBuf<MapData>>,
    ebpf: Ebpf,
    tracepoints: Vec<&'static str>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("hook", &Hook::Tracepoint)
            .field("tracepoints", &self.tracepoints)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// Loads the eBPF object with the default [`ProbeOptions`], attaches it to every available
    /// open syscall exit tracepoint and opens the ring buffer. Needs root and a tokio runtime.
    pub fn load() -> Result<Probe, ProbeError> {
        Probe::load_with(ProbeOptions::default())
    }

    /// Loads and attaches the eBPF object like [`Probe::load`], with `options`.
    pub fn load_with(options: ProbeOptions) -> Result<Probe, ProbeError> {
        // Check the environment first, so the common mistakes get a precise error.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProbeError::NoRuntime);
        }
        let tracefs = find_tracefs()?;

        // Loading relocates the CO-RE field accesses against /sys/kernel/btf/vmlinux.
        let window_ns = u64::try_from(options.repeat_window.as_nanos()).unwrap_or(u64::MAX);
        let mut ebpf = EbpfLoader::new()
            .override_global(REPEAT_WINDOW_GLOBAL, &window_ns, true)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        let mut tracepoints = Vec::new();
        for tracepoint in &TRACEPOINTS {
            if attach(&mut ebpf, &tracefs, tracepoint)? {
                tracepoints.push(tracepoint.name);
            }
        }

        // The ring buffer fd becomes readable when the kernel adds records.
        let map = ebpf
            .take_map(EVENTS_MAP)
            .ok_or(ProbeError::MapMissing(EVENTS_MAP))?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: EVENTS_MAP,
            source,
        })?;
        let events = register(ring)?;

        info!(
            hook = %Hook::Tracepoint,
            tracepoints = ?tracepoints,
            "token open probe attached"
        );
        Ok(Probe {
            events,
            ebpf,
            tracepoints,
        })
    }

    /// Kind of kernel hook the probe uses.
    pub fn hook(&self) -> Hook {
        Hook::Tracepoint
    }

    /// Names of the attached `syscalls` tracepoints, e.g. `sys_exit_openat`.
    pub fn tracepoints(&self) -> &[&'static str] {
        &self.tracepoints
    }

    /// Waits for the next token open. Records that fail to decode are logged and skipped.
    /// Returns `None` only when polling the ring buffer fails, which is logged.
    pub async fn next(&mut self) -> Option<TokenOpen> {
        loop {
            let mut guard = match self.events.readable_mut().await {
                Ok(guard) => guard,
                Err(error) => {
                    warn!(%error, "polling the token open ring buffer failed");
                    return None;
                }
            };

            // Drain the buffer, and clear the readiness only once it is empty.
            while let Some(record) = guard.get_inner_mut().next() {
                let decoded = decode_event(&record);
                drop(record);
                match decoded {
                    Ok(event) => return Some(event),
                    Err(error) => warn!(%error, "skipped an undecodable token open record"),
                }
            }
            guard.clear_ready();
        }
    }

    /// Reads the kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, ProbeError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(ProbeError::MapMissing(COUNTERS_MAP))?;
        let map_error = |source| ProbeError::Map {
            name: COUNTERS_MAP,
            source,
        };
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(map_error)?;
        let read = |index: u32| -> Result<u64, ProbeError> {
            let values = array.get(&index, 0).map_err(map_error)?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            lost: read(COUNTER_LOST)?,
            path_filtered: read(COUNTER_PATH_FILTERED)?,
            submitted: read(COUNTER_SUBMITTED)?,
            repeats: read(COUNTER_REPEATS)?,
        })
    }

    /// Number of token opens dropped because the ring buffer was full.
    pub fn lost_events(&self) -> Result<u64, ProbeError> {
        Ok(self.counters()?.lost)
    }
}

/// Relocates the object against the kernel BTF in `btf_path` instead of the running kernel's,
/// then loads every program into the running kernel without attaching it. A field that the
/// other kernel lacks fails the load. Returns the names of the loaded programs.
///
/// NOTE: this checks the CO-RE relocations for another kernel, but the verifier that runs is
/// the running kernel's, which may accept programs that the other kernel's verifier rejects.
pub fn check_relocations(btf_path: &Path) -> Result<Vec<&'static str>, ProbeError> {
    let btf =
        Btf::parse_file(btf_path, Endianness::default()).map_err(|source| ProbeError::Btf {
            path: btf_path.to_owned(),
            source,
        })?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(OBJECT)
        .map_err(ProbeError::Load)?;

    let mut loaded = Vec::new();
    for tracepoint in &TRACEPOINTS {
        let load_error = |source| ProbeError::Attach {
            program: tracepoint.program,
            tracepoint: tracepoint.name,
            source,
        };
        let program: &mut TracePoint = ebpf
            .program_mut(tracepoint.program)
            .ok_or(ProbeError::ProgramMissing(tracepoint.program))?
            .try_into()
            .map_err(load_error)?;
        program.load().map_err(load_error)?;
        loaded.push(tracepoint.program);
    }
    Ok(loaded)
}

/// Loads and attaches one program. Returns false when an optional tracepoint is absent.
fn attach(ebpf: &mut Ebpf, tracefs: &Path, tracepoint: &Tracepoint) -> Result<bool, ProbeError> {
    let exists = tracefs
        .join("events/syscalls")
        .join(tracepoint.name)
        .exists();
    if !exists {
        if tracepoint.required {
            return Err(ProbeError::TracepointMissing {
                name: tracepoint.name,
                tracefs: tracefs.to_owned(),
            });
        }
        info!(
            tracepoint = tracepoint.name,
            "optional tracepoint not in this kernel, skipped"
        );
        return Ok(false);
    }

    let attach_error = |source| ProbeError::Attach {
        program: tracepoint.program,
        tracepoint: tracepoint.name,
        source,
    };
    let program: &mut TracePoint = ebpf
        .program_mut(tracepoint.program)
        .ok_or(ProbeError::ProgramMissing(tracepoint.program))?
        .try_into()
        .map_err(attach_error)?;
    program.load().map_err(attach_error)?;
    program
        .attach("syscalls", tracepoint.name)
        .map_err(attach_error)?;
    info!(
        hook = %Hook::Tracepoint,
        tracepoint = tracepoint.name,
        "attached"
    );
    Ok(true)
}

/// Registers the ring buffer's fd with the tokio reactor.
#[expect(
    unsafe_code,
    reason = "tokio requires a promise that the registered fd stays open"
)]
fn register(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>, ProbeError> {
    // SAFETY: the RingBuf owns its MapData, which owns the map's fd and closes it only on drop,
    // so the fd stays open and as_raw_fd() returns the same fd for the AsyncFd's lifetime.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    registered.map_err(|error| ProbeError::Register(error.into_parts().1))
}

/// Returns the first tracefs mount that has the syscall tracepoints.
///
/// tracefs is readable by root only, so a permission error means the agent
/// lacks privileges, not that tracefs is missing.
fn find_tracefs() -> Result<PathBuf, ProbeError> {
    for path in TRACEFS_PATHS.iter().map(PathBuf::from) {
        match std::fs::metadata(path.join("events/syscalls")) {
            Ok(metadata) if metadata.is_dir() => return Ok(path),
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                return Err(ProbeError::TracefsDenied { path });
            }
            _ => {}
        }
    }
    Err(ProbeError::TracefsMissing)
}

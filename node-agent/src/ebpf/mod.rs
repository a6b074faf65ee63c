//! Kernel probe that reports read-opens of AWS web-identity token files.
//!
//! The eBPF program (`node-agent-ebpf/tokenguard.bpf.c`) runs at the exit of `open`, `openat`
//! and `openat2`. It keeps read-opens of files named `token` or `eks-pod-identity-token` inside
//! the IRSA and EKS Pod Identity token directories, both as mounted in a pod and as the kubelet
//! keeps them on the node. For each it sends one record with the opener's identity, executable
//! and command line. It never reads the token itself.
//!
//! ```ignore
//! let mut probe = ebpf::Probe::load()?; // inside a tokio runtime, as root
//! while let Some(open) = probe.next().await {
//!     println!("{} ({}) read {}", open.comm, open.tgid, open.token_path);
//! }
//! ```

mod loader;
mod path;
mod raw;

use std::fmt;

use serde::Serialize;

pub use loader::{Probe, ProbeError, ProbeOptions, check_relocations};
pub use path::clean_token_path;
pub use raw::{DecodeError, OpenSyscall, TokenOpen};

/// Kind of kernel hook a [`Probe`] is attached with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// The `syscalls:sys_exit_open*` tracepoints.
    Tracepoint,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tracepoint => f.write_str("tracepoint"),
        }
    }
}

/// Kernel-side counters of the probe, summed over CPUs since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Token opens dropped because the ring buffer was full.
    pub lost: u64,
    /// Read-opens of files named like a token outside the AWS token directories.
    pub path_filtered: u64,
    /// Records written to the ring buffer.
    pub submitted: u64,
    /// Token opens folded into an earlier event of the same process and file.
    pub repeats: u64,
}

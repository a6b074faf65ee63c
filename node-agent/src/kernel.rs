//! The kernel probe as an event source of the agent.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::Stream;
use tracing::{info, warn};

use crate::ebpf::{Probe, ProbeError, TokenOpen};
use crate::record::OpenRecord;

/// How often the kernel counters are read while no event arrives.
const COUNTER_INTERVAL: Duration = Duration::from_secs(10);

/// Minimum time between two reads of the counters while events arrive. A read
/// costs one `bpf(2)` call per counter, too much to pay for every event under
/// a flood of token opens.
const COUNTER_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Mount point for tracefs when the host has not mounted it.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Loads the probe, mounting tracefs first when no tracefs is mounted.
///
/// Tracepoints are attached by id, read from tracefs. Some hosts and most
/// container images boot without tracefs mounted; an agent with
/// CAP_SYS_ADMIN can mount it, as `mount -t tracefs nodev /sys/kernel/tracing`.
pub fn load_probe() -> Result<Probe, ProbeError> {
    match Probe::load() {
        Err(ProbeError::TracefsMissing) if mount_tracefs() => Probe::load(),
        result => result,
    }
}

fn mount_tracefs() -> bool {
    let target = Path::new(TRACEFS);
    if !target.is_dir() {
        return false;
    }
    let flags = rustix::mount::MountFlags::NOSUID
        | rustix::mount::MountFlags::NODEV
        | rustix::mount::MountFlags::NOEXEC;
    match rustix::mount::mount("nodev", target, "tracefs", flags, c"") {
        Ok(()) => {
            info!(path = TRACEFS, "mounted tracefs to attach the tracepoints");
            true
        }
        Err(error) => {
            warn!(path = TRACEFS, error = %error, "failed to mount tracefs");
            false
        }
    }
}

/// Turns a kernel event into the agent's input record.
pub fn open_record(open: TokenOpen) -> OpenRecord {
    OpenRecord {
        timestamp_ns: open.timestamp_boot_ns,
        tgid: open.tgid,
        tid: open.tid,
        ppid: open.ppid,
        uid: open.uid,
        gid: open.gid,
        comm: open.comm,
        parent_comm: open.parent_comm,
        exe: open.exe,
        parent_exe: open.parent_exe,
        args: open.args,
        args_truncated: open.args_truncated,
        path: open.token_path,
        start_boottime_ns: open.start_boottime_ns,
        parent_start_boottime_ns: open.parent_start_boottime_ns,
        cgroup_id: open.cgroup_id,
        mnt_ns_inum: open.mnt_ns_inum,
    }
}

/// The probe's kernel-side counters as last read, for the metrics.
#[derive(Debug, Default)]
pub struct KernelCounters {
    /// Token opens dropped because the ring buffer was full.
    pub lost: AtomicU64,
    /// Token opens folded into an earlier event of the same process and file.
    pub repeats: AtomicU64,
}

/// Streams the probe's events as open records.
///
/// Returns the stream and the probe's counters. The stream refreshes the
/// counters at most once a second while events arrive and every 10 seconds
/// while none do, and logs at warn whenever the count of lost events grows.
pub fn kernel_source(probe: Probe) -> (impl Stream<Item = OpenRecord> + Send, Arc<KernelCounters>) {
    let counters = Arc::new(KernelCounters::default());
    let state = (probe, counters.clone(), None::<Instant>);
    let stream =
        futures::stream::unfold(state, |(mut probe, counters, mut refreshed)| async move {
            loop {
                let next = tokio::time::timeout(COUNTER_INTERVAL, probe.next()).await;
                let due = refreshed.is_none_or(|at| at.elapsed() >= COUNTER_MIN_INTERVAL);
                if due || next.is_err() {
                    update_counters(&probe, &counters);
                    refreshed = Some(Instant::now());
                }
                match next {
                    Ok(Some(open)) => {
                        return Some((open_record(open), (probe, counters, refreshed)));
                    }
                    Ok(None) => {
                        warn!("kernel ring buffer polling failed; no more events");
                        return None;
                    }
                    Err(_elapsed) => continue,
                }
            }
        });
    (stream, counters)
}

fn update_counters(probe: &Probe, counters: &KernelCounters) {
    let now = match probe.counters() {
        Ok(now) => now,
        Err(error) => {
            warn!(error = %error, "failed to read the kernel program's counters");
            return;
        }
    };
    counters.repeats.store(now.repeats, Ordering::Relaxed);
    let before = counters.lost.swap(now.lost, Ordering::Relaxed);
    if now.lost > before {
        warn!(
            lost = now.lost,
            new = now.lost - before,
            "kernel dropped token events: the ring buffer was full"
        );
    }
}

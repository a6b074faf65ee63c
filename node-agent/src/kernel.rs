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

/// Where the agent mounts tracefs when the host has not.
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

/// Streams the probe's events as open records.
///
/// Returns the stream and the count of events the kernel dropped because the
/// ring buffer was full. The stream refreshes the count at most once a second
/// while events arrive and every 10 seconds while none do, and logs at warn
/// whenever it grows.
pub fn kernel_source(probe: Probe) -> (impl Stream<Item = OpenRecord> + Send, Arc<AtomicU64>) {
    let lost = Arc::new(AtomicU64::new(0));
    let state = (probe, lost.clone(), None::<Instant>);
    let stream = futures::stream::unfold(state, |(mut probe, lost, mut refreshed)| async move {
        loop {
            let next = tokio::time::timeout(COUNTER_INTERVAL, probe.next()).await;
            let due = refreshed.is_none_or(|at| at.elapsed() >= COUNTER_MIN_INTERVAL);
            if due || next.is_err() {
                update_lost(&probe, &lost);
                refreshed = Some(Instant::now());
            }
            match next {
                Ok(Some(open)) => return Some((open_record(open), (probe, lost, refreshed))),
                Ok(None) => {
                    warn!("kernel ring buffer polling failed; no more events");
                    return None;
                }
                Err(_elapsed) => continue,
            }
        }
    });
    (stream, lost)
}

fn update_lost(probe: &Probe, lost: &AtomicU64) {
    match probe.lost_events() {
        Ok(now) => {
            let before = lost.swap(now, Ordering::Relaxed);
            if now > before {
                warn!(
                    lost = now,
                    new = now - before,
                    "kernel dropped token events: the ring buffer was full"
                );
            }
        }
        Err(error) => warn!(error = %error, "failed to read the kernel's lost-event counter"),
    }
}

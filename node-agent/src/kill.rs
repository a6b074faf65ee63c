//! Carries out the detector's kill orders: SIGKILL to one process, named by
//! its pid and its start time.
//!
//! The agent opens a pidfd for the pid first, then compares the start time in
//! `/proc/<pid>/stat` with the order's, and signals through the pidfd only if
//! they are equal. A process keeps its pid until its parent reaps it, so if
//! the pinned process is still there when the signal is sent, it held the pid
//! while its stat was read, and the check was about it. If it exited and the
//! pid went to another process, the check finds the other start time, or the
//! signal fails with `ESRCH`. Either way a reused pid is never signalled.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use tokenguard_schema::{ActionResult, AgentOrder};

use crate::procfs::{ProcError, ProcFs, Stat};

/// Inode number of the initial pid namespace, `PROC_PID_INIT_INO` in the
/// kernel's include/linux/proc_ns.h (0xEFFFFFFC since Linux 3.8). The eBPF
/// program reports pids of this namespace.
const INIT_PID_NAMESPACE_INODE: u64 = 0xEFFF_FFFC;

/// Handling of the detector's kill orders, set with `--kill-orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum KillOrders {
    /// Kill the process if it is still the one the order names.
    #[default]
    Follow,
    /// Kill nothing, and report each order as disabled.
    Ignore,
}

impl KillOrders {
    pub fn as_str(self) -> &'static str {
        match self {
            KillOrders::Follow => "follow",
            KillOrders::Ignore => "ignore",
        }
    }
}

impl fmt::Display for KillOrders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns the name of `result` on the wire, such as `pid_reused`.
pub fn result_name(result: ActionResult) -> &'static str {
    match result {
        ActionResult::Killed => "killed",
        ActionResult::Exited => "exited",
        ActionResult::PidReused => "pid_reused",
        ActionResult::Disabled => "disabled",
        ActionResult::Failed => "failed",
    }
}

/// Result of one kill order, with what the agent found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillOutcome {
    pub result: ActionResult,
    /// The error, or why the process was left alone.
    pub detail: Option<String>,
}

impl KillOutcome {
    fn new(result: ActionResult, detail: impl Into<String>) -> KillOutcome {
        KillOutcome {
            result,
            detail: Some(detail.into()),
        }
    }

    /// Builds the outcome of a failed order with `reason` as its detail.
    pub fn failed(reason: impl Into<String>) -> KillOutcome {
        KillOutcome::new(ActionResult::Failed, reason)
    }
}

/// Sends SIGKILL to processes named by pid and start time, as kill orders ask.
#[derive(Debug, Clone)]
pub struct Killer {
    orders: KillOrders,
    procfs: ProcFs,
}

impl Killer {
    /// Builds a killer that follows or ignores orders, reading start times
    /// from the procfs of the host pid namespace at `proc_root`.
    pub fn new(orders: KillOrders, proc_root: impl Into<PathBuf>) -> Killer {
        Killer {
            orders,
            procfs: ProcFs::new(proc_root),
        }
    }

    /// Returns whether orders are followed or ignored.
    pub fn orders(&self) -> KillOrders {
        self.orders
    }

    /// Checks that the pids of orders name the same processes for this
    /// agent's syscalls as for the eBPF program and for the procfs it reads.
    /// So the agent must run in the initial pid namespace, and `proc_root`
    /// must show it under its own pid.
    ///
    /// # Errors
    ///
    /// Returns why not, as a message for the order's report.
    pub fn check_pid_namespace(&self) -> Result<(), String> {
        let own_path = Path::new("/proc/self/ns/pid");
        let own = std::fs::metadata(own_path)
            .map(|metadata| metadata.ino())
            .map_err(|error| format!("failed to read {}: {error}", own_path.display()))?;
        if own != INIT_PID_NAMESPACE_INODE {
            return Err(format!(
                "the agent runs in pid namespace {own}, not in the host's \
                 ({INIT_PID_NAMESPACE_INODE}) where the reported pids are: \
                 run it with hostPID: true"
            ));
        }
        // `self` in a procfs names the reader by its pid in that procfs's
        // namespace, so it shows the agent's own pid only in the host's.
        let self_link = self.procfs.root().join("self");
        let link_target = std::fs::read_link(&self_link)
            .map_err(|error| format!("failed to read {}: {error}", self_link.display()))?;
        let own_pid = std::process::id().to_string();
        if link_target.as_os_str() != own_pid.as_str() {
            return Err(format!(
                "{} shows the agent as {}, not as pid {own_pid}, so it is not the host's \
                 procfs: pass the host's /proc with --host-proc",
                self_link.display(),
                link_target.display()
            ));
        }
        Ok(())
    }

    /// Carries out `order`.
    pub fn carry_out(&self, order: &AgentOrder) -> KillOutcome {
        match *order {
            AgentOrder::Kill { pid, start_time } => self.kill(pid, start_time),
        }
    }

    /// Sends SIGKILL to `pid` if it is still the process that started at
    /// `start_time` clock ticks after boot.
    ///
    /// Pids 0 and 1 and the agent's own pid are never signalled: such an
    /// order fails.
    pub fn kill(&self, pid: u32, start_time: u64) -> KillOutcome {
        if self.orders == KillOrders::Ignore {
            return KillOutcome::new(
                ActionResult::Disabled,
                "the agent runs with --kill-orders ignore",
            );
        }
        if pid <= 1 {
            return KillOutcome::failed(format!(
                "kill order for pid {pid} rejected: it is the init process or no process"
            ));
        }
        if pid == std::process::id() {
            return KillOutcome::failed(format!(
                "kill order for pid {pid} rejected: it is the agent itself"
            ));
        }
        if let Err(reason) = self.check_pid_namespace() {
            return KillOutcome::failed(reason);
        }
        let Some(raw_pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return KillOutcome::failed(format!("invalid pid {pid}: larger than any pid"));
        };
        kill_pinned(&self.procfs, raw_pid, pid, start_time)
    }
}

/// Pins `pid` with a pidfd, checks its start time and signals it.
fn kill_pinned(procfs: &ProcFs, raw_pid: Pid, pid: u32, start_time: u64) -> KillOutcome {
    let exited = || {
        KillOutcome::new(
            ActionResult::Exited,
            format!("pid {pid} had exited before the order arrived"),
        )
    };

    let pidfd = match pidfd_open(raw_pid, PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        Err(Errno::SRCH) => return exited(),
        Err(errno) => {
            return KillOutcome::failed(format!("pidfd_open of pid {pid} failed: {errno}"));
        }
    };

    let stat = match procfs.stat(pid) {
        Ok(stat) => stat,
        Err(ProcError::Read { source, .. }) if is_gone(&source) => return exited(),
        Err(error) => return KillOutcome::failed(error.to_string()),
    };
    if stat.start_time != start_time {
        return KillOutcome::new(
            ActionResult::PidReused,
            format!(
                "pid {pid} belongs to a process that started at tick {}, not at tick \
                 {start_time}; it was left alone",
                stat.start_time
            ),
        );
    }
    if is_zombie(&stat) {
        return KillOutcome::new(
            ActionResult::Exited,
            format!("pid {pid} had exited and waits for its parent to reap it"),
        );
    }

    match pidfd_send_signal(&pidfd, Signal::KILL) {
        Ok(()) => KillOutcome {
            result: ActionResult::Killed,
            detail: None,
        },
        Err(Errno::SRCH) => exited(),
        Err(errno) => KillOutcome::failed(format!("SIGKILL to pid {pid} failed: {errno}")),
    }
}

/// Returns whether a procfs read failed because the process is gone: the
/// directory is removed (`ENOENT`), or the process exited during the read
/// (`ESRCH`).
fn is_gone(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ESRCH)
}

/// Returns whether the process has exited and only its exit status is left.
fn is_zombie(stat: &Stat) -> bool {
    matches!(stat.state, 'Z' | 'X' | 'x')
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use super::*;

    /// Starts `sleep 60`, a process the test may kill.
    fn sleeper() -> Child {
        Command::new("sleep").arg("60").spawn().unwrap()
    }

    fn start_time(pid: u32) -> u64 {
        ProcFs::default().stat(pid).unwrap().start_time
    }

    fn follow() -> Killer {
        Killer::new(KillOrders::Follow, "/proc")
    }

    /// Waits for `child` to exit, killing it after 10 seconds.
    fn reap(mut child: Child) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        panic!("child {} still ran 10 s after the order", child.id());
    }

    /// Returns whether `child` is still running, and kills it.
    fn still_running(mut child: Child) -> bool {
        std::thread::sleep(Duration::from_millis(100));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        running
    }

    #[test]
    fn same_process_killed() {
        let child = sleeper();
        let pid = child.id();

        let outcome = follow().kill(pid, start_time(pid));

        assert_eq!(outcome.result, ActionResult::Killed, "{outcome:?}");
        assert_eq!(outcome.detail, None);
        assert_eq!(reap(child).signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn other_start_time_left_alone() {
        let child = sleeper();
        let pid = child.id();

        let outcome = follow().kill(pid, start_time(pid) + 1);

        assert_eq!(outcome.result, ActionResult::PidReused, "{outcome:?}");
        let detail = outcome.detail.unwrap();
        assert!(detail.contains(&format!("pid {pid}")), "{detail}");
        assert!(
            still_running(child),
            "a pid with another start time was killed"
        );
    }

    #[test]
    fn reaped_process_exited() {
        let mut child = sleeper();
        let pid = child.id();
        let started = start_time(pid);
        child.kill().unwrap();
        child.wait().unwrap();

        let outcome = follow().kill(pid, started);

        // The pid could go to a new process in between, which the start time
        // distinguishes.
        assert!(
            matches!(
                outcome.result,
                ActionResult::Exited | ActionResult::PidReused
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn zombie_reported_exited() {
        let mut child = sleeper();
        let pid = child.id();
        let started = start_time(pid);
        // Child::kill sends SIGKILL and leaves the child unreaped.
        child.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ProcFs::default().stat(pid).unwrap().state != 'Z' {
            assert!(
                Instant::now() < deadline,
                "child {pid} did not become a zombie"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        let outcome = follow().kill(pid, started);

        assert_eq!(outcome.result, ActionResult::Exited, "{outcome:?}");
        child.wait().unwrap();
    }

    #[test]
    fn init_and_self_rejected() {
        let killer = follow();
        for pid in [0, 1, std::process::id()] {
            let outcome = killer.kill(pid, 0);
            assert_eq!(outcome.result, ActionResult::Failed, "pid {pid}");
            let detail = outcome.detail.unwrap();
            assert!(detail.starts_with("kill order for pid"), "{detail}");
        }
    }

    #[test]
    fn pid_out_of_range_fails() {
        let outcome = follow().kill(u32::MAX, 1);
        assert_eq!(outcome.result, ActionResult::Failed, "{outcome:?}");
    }

    #[test]
    fn result_names_match_wire() {
        for result in [
            ActionResult::Killed,
            ActionResult::Exited,
            ActionResult::PidReused,
            ActionResult::Disabled,
            ActionResult::Failed,
        ] {
            let wire = serde_json::to_value(result).unwrap();
            assert_eq!(wire, result_name(result), "{result:?}");
        }
    }

    #[test]
    fn ignore_mode_kills_nothing() {
        let child = sleeper();
        let pid = child.id();

        let outcome = Killer::new(KillOrders::Ignore, "/proc").kill(pid, start_time(pid));

        assert_eq!(outcome.result, ActionResult::Disabled, "{outcome:?}");
        assert!(still_running(child), "an ignored order killed the process");
    }

    #[test]
    fn foreign_procfs_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let child = sleeper();
        let pid = child.id();

        let outcome = Killer::new(KillOrders::Follow, dir.path()).kill(pid, start_time(pid));

        assert_eq!(outcome.result, ActionResult::Failed, "{outcome:?}");
        let detail = outcome.detail.unwrap();
        assert!(detail.contains("self"), "{detail}");
        assert!(
            still_running(child),
            "the process was killed without a check"
        );
    }

    #[test]
    fn thread_id_not_a_process() {
        // pidfd_open takes only the pid of a thread group leader.
        let (sender, receiver) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // /proc/thread-self links to <pid>/task/<tid>.
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
            sender.send(tid).unwrap();
            let _ = stopped.recv();
        });
        let tid = receiver.recv().unwrap();
        assert_ne!(tid, std::process::id());

        let outcome = follow().kill(tid, 0);

        stop.send(()).unwrap();
        thread.join().unwrap();
        assert_eq!(outcome.result, ActionResult::Failed, "{outcome:?}");
        let detail = outcome.detail.unwrap();
        assert!(detail.starts_with("pidfd_open of pid"), "{detail}");
    }
}

//! The agent's input record and the pieces of a `TokenRead` built from it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokenguard_schema::{MAX_ARGS, MAX_ARGS_BYTES, MAX_EXE_LEN, Process};

use crate::procfs::{ProcFs, boot_ns_to_ticks};

/// Maximum length of a kernel command name (`TASK_COMM_LEN` minus the NUL).
const MAX_COMM_BYTES: usize = 15;

pub use tokenguard_schema::{MAX_NAME_LEN, is_valid_name};

/// Placeholder for an executable path that neither the kernel nor procfs gave.
/// The wire schema requires an absolute path.
pub const UNKNOWN_EXE: &str = "/[unknown]";

/// Placeholder uid for a parent whose uid could not be read: `(uid_t)-1`,
/// which the kernel never assigns to a process.
pub const UNKNOWN_UID: u32 = u32::MAX;

/// One read-open of a token file as the event source reports it, with every
/// kernel string already decoded.
///
/// Empty strings and zero times mean the source did not capture the field;
/// the pipeline then reads it from procfs while the process still exists.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenRecord {
    /// `CLOCK_BOOTTIME` at the open, in nanoseconds.
    pub timestamp_ns: u64,
    /// Process id (thread group id) of the opener.
    pub tgid: u32,
    /// Thread id of the opener.
    pub tid: u32,
    pub ppid: u32,
    /// Real uid in the initial user namespace.
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub parent_comm: String,
    pub exe: String,
    pub parent_exe: String,
    pub args: Vec<String>,
    /// Whether the source cut `args` short.
    pub args_truncated: bool,
    /// Path of the opened file, relative to the opener's root directory.
    pub path: String,
    /// `start_boottime` of the opener's thread group leader, in nanoseconds.
    pub start_boottime_ns: u64,
    pub parent_start_boottime_ns: u64,
    /// cgroup v2 id (inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// Inode number of the opener's mount namespace.
    pub mnt_ns_inum: u32,
}

/// Allocates event ids `<boot id>:<sequence>`, unique within one boot.
///
/// The sequence is the event's boot-time timestamp in nanoseconds, raised to
/// one more than the previous sequence when needed. A restarted agent only
/// receives later events, so it does not reuse ids of the run before it.
#[derive(Debug)]
pub struct EventIds {
    boot_id: String,
    last: AtomicU64,
}

impl EventIds {
    /// Builds an allocator for the boot `boot_id`.
    pub fn new(boot_id: impl Into<String>) -> EventIds {
        EventIds {
            boot_id: boot_id.into(),
            last: AtomicU64::new(0),
        }
    }

    /// Allocates the id of an event observed at `timestamp_ns`.
    pub fn next(&self, timestamp_ns: u64) -> String {
        let previous = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(timestamp_ns.max(last + 1))
            })
            .unwrap_or(0);
        let sequence = timestamp_ns.max(previous + 1);
        format!("{}:{sequence}", self.boot_id)
    }
}

/// Cuts `args` to [`MAX_ARGS`] entries and [`MAX_ARGS_BYTES`] bytes in total,
/// and returns whether anything was cut.
pub fn truncate_args(args: &mut Vec<String>) -> bool {
    let mut truncated = false;
    if args.len() > MAX_ARGS {
        args.truncate(MAX_ARGS);
        truncated = true;
    }
    let mut budget = MAX_ARGS_BYTES;
    for (index, arg) in args.iter_mut().enumerate() {
        if arg.len() > budget {
            truncate_utf8(arg, budget);
            truncated = true;
            let keep = if arg.is_empty() { index } else { index + 1 };
            args.truncate(keep);
            break;
        }
        budget -= arg.len();
    }
    truncated
}

/// Cuts `value` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(value: &mut String, max: usize) {
    if value.len() <= max {
        return;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
}

/// Builds the `process` of a `TokenRead`, filling fields the source left
/// empty from procfs when the pid still belongs to the same process.
pub fn build_process(record: &OpenRecord, procfs: &ProcFs, ticks_per_second: u64) -> Process {
    let start_time = start_ticks(
        record.tgid,
        record.start_boottime_ns,
        procfs,
        ticks_per_second,
    );
    let alive = || start_time.is_some_and(|ticks| procfs.is_same_process(record.tgid, ticks));

    let exe = non_empty(&record.exe)
        .or_else(|| alive().then(|| procfs.exe(record.tgid).ok()).flatten())
        .map_or_else(|| UNKNOWN_EXE.to_owned(), exe_path);

    let (mut args, mut args_truncated) = (record.args.clone(), record.args_truncated);
    if args.is_empty()
        && alive()
        && let Ok(cmdline) = procfs.cmdline(record.tgid)
    {
        args = cmdline;
        args_truncated = false;
    }
    args_truncated |= truncate_args(&mut args);

    let comm = non_empty(&record.comm)
        .or_else(|| alive().then(|| procfs.comm(record.tgid).ok()).flatten())
        .unwrap_or_default();

    Process {
        pid: record.tgid,
        comm: command_name(comm, &exe),
        exe,
        args,
        args_truncated,
        uid: record.uid,
        start_time: start_time.unwrap_or(0),
        parent: build_parent(record, procfs, ticks_per_second).map(Box::new),
    }
}

fn build_parent(record: &OpenRecord, procfs: &ProcFs, ticks_per_second: u64) -> Option<Process> {
    if record.ppid == 0 {
        return None;
    }
    let pid = record.ppid;
    let start_time = start_ticks(
        pid,
        record.parent_start_boottime_ns,
        procfs,
        ticks_per_second,
    );
    let alive = start_time.is_some_and(|ticks| procfs.is_same_process(pid, ticks));

    let exe = non_empty(&record.parent_exe)
        .or_else(|| alive.then(|| procfs.exe(pid).ok()).flatten())
        .map_or_else(|| UNKNOWN_EXE.to_owned(), exe_path);
    let comm = non_empty(&record.parent_comm)
        .or_else(|| alive.then(|| procfs.comm(pid).ok()).flatten())
        .unwrap_or_default();
    let mut args = if alive {
        procfs.cmdline(pid).unwrap_or_default()
    } else {
        Vec::new()
    };
    let args_truncated = truncate_args(&mut args);
    let uid = if alive {
        procfs.uid(pid).unwrap_or(UNKNOWN_UID)
    } else {
        UNKNOWN_UID
    };

    Some(Process {
        pid,
        comm: command_name(comm, &exe),
        exe,
        args,
        args_truncated,
        uid,
        start_time: start_time.unwrap_or(0),
        parent: None,
    })
}

/// Start time in ticks from the kernel's nanoseconds, or from `stat` when the
/// source gave none.
fn start_ticks(pid: u32, boot_ns: u64, procfs: &ProcFs, ticks_per_second: u64) -> Option<u64> {
    if boot_ns != 0 {
        return Some(boot_ns_to_ticks(boot_ns, ticks_per_second));
    }
    procfs.stat(pid).ok().map(|stat| stat.start_time)
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// Returns an executable path that the schema accepts: `exe` cut at its
/// first NUL and to [`MAX_EXE_LEN`] bytes, or [`UNKNOWN_EXE`] when it is not
/// absolute.
///
/// NOTE: two paths that share their first `MAX_EXE_LEN` bytes become the same
/// `exe`, so the detector cannot tell them apart.
fn exe_path(mut exe: String) -> String {
    cut_at_nul(&mut exe);
    if !exe.starts_with('/') {
        return UNKNOWN_EXE.to_owned();
    }
    truncate_utf8(&mut exe, MAX_EXE_LEN);
    exe
}

/// Cuts `value` at its first NUL. Kernel strings end there, and the schema
/// rejects a NUL in a name or path.
fn cut_at_nul(value: &mut String) {
    if let Some(end) = value.find('\0') {
        value.truncate(end);
    }
}

/// Returns a command name of 1 to 15 bytes, as the schema requires: `comm`, or the
/// executable's file name when `comm` is empty.
fn command_name(mut comm: String, exe: &str) -> String {
    cut_at_nul(&mut comm);
    let mut name = if comm.is_empty() {
        exe.rsplit('/').next().unwrap_or_default().to_owned()
    } else {
        comm
    };
    truncate_utf8(&mut name, MAX_COMM_BYTES);
    if name.is_empty() {
        name.push('?');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OpenRecord {
        OpenRecord {
            timestamp_ns: 18_342_200_000_000,
            tgid: 48211,
            tid: 48215,
            ppid: 48190,
            uid: 1000,
            gid: 1000,
            comm: "python3".to_owned(),
            parent_comm: "sh".to_owned(),
            exe: "/usr/local/bin/python3.12".to_owned(),
            parent_exe: "/bin/dash".to_owned(),
            args: vec![
                "python3".to_owned(),
                "-c".to_owned(),
                "import boto3".to_owned(),
            ],
            args_truncated: false,
            path: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token".to_owned(),
            start_boottime_ns: 18_342_110_000_000,
            parent_start_boottime_ns: 18_341_200_000_000,
            cgroup_id: 12345,
            mnt_ns_inum: 4026532801,
        }
    }

    #[test]
    fn event_ids_unique_and_increasing() {
        let ids = EventIds::new("boot");
        assert_eq!(ids.next(100), "boot:100");
        assert_eq!(ids.next(100), "boot:101");
        assert_eq!(ids.next(50), "boot:102");
        assert_eq!(ids.next(1000), "boot:1000");
    }

    #[test]
    fn args_cut_to_max_count() {
        let mut args: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        assert!(truncate_args(&mut args));
        assert_eq!(args.len(), MAX_ARGS);
        let mut short = vec!["a".to_owned()];
        assert!(!truncate_args(&mut short));
    }

    #[test]
    fn args_cut_to_byte_budget() {
        let mut args = vec!["x".repeat(3000), "é".repeat(1000), "tail".to_owned()];
        assert!(truncate_args(&mut args));
        assert_eq!(args.len(), 2);
        let total: usize = args.iter().map(String::len).sum();
        assert!(total <= MAX_ARGS_BYTES);
        assert!(args[1].chars().all(|c| c == 'é'));
    }

    #[test]
    fn process_from_kernel_fields() {
        let procfs = ProcFs::new("/nonexistent-proc");
        let process = build_process(&record(), &procfs, 100);
        assert_eq!(process.pid, 48211);
        assert_eq!(process.comm, "python3");
        assert_eq!(process.exe, "/usr/local/bin/python3.12");
        assert_eq!(process.start_time, 1_834_211);
        assert_eq!(process.args, vec!["python3", "-c", "import boto3"]);
        let parent = process.parent.expect("ppid 48190 gives a parent");
        assert_eq!(parent.pid, 48190);
        assert_eq!(parent.comm, "sh");
        assert_eq!(parent.exe, "/bin/dash");
        assert_eq!(parent.start_time, 1_834_120);
        assert_eq!(parent.uid, UNKNOWN_UID, "no procfs entry for the parent");
    }

    #[test]
    fn empty_fields_filled_from_procfs() {
        let procfs = ProcFs::default();
        let pid = std::process::id();
        let stat = procfs.stat(pid).unwrap();
        let mut record = record();
        record.tgid = pid;
        record.exe.clear();
        record.comm.clear();
        record.args.clear();
        record.start_boottime_ns = 0;
        record.ppid = pid;
        record.parent_exe.clear();
        record.parent_start_boottime_ns = 0;
        let process = build_process(&record, &procfs, 100);
        assert_eq!(process.start_time, stat.start_time);
        assert_eq!(process.exe, procfs.exe(pid).unwrap());
        assert_eq!(process.args, procfs.cmdline(pid).unwrap());
        assert!(!process.comm.is_empty());
        let parent = process.parent.unwrap();
        assert_eq!(parent.uid, procfs.uid(pid).unwrap());
        assert_eq!(parent.exe, procfs.exe(pid).unwrap());
    }

    #[test]
    fn reused_pid_not_trusted() {
        let procfs = ProcFs::default();
        let mut record = record();
        record.tgid = std::process::id();
        record.exe.clear();
        // A start time that cannot match this process: the pid was reused.
        record.start_boottime_ns = 1;
        let process = build_process(&record, &procfs, 100);
        assert_eq!(process.exe, UNKNOWN_EXE);
    }

    #[test]
    fn comm_falls_back_to_exe_name() {
        assert_eq!(
            command_name(String::new(), "/usr/bin/a-very-long-binary-name"),
            "a-very-long-bin"
        );
        assert_eq!(command_name(String::new(), UNKNOWN_EXE), "[unknown]");
        assert_eq!(command_name("curl".to_owned(), "/x"), "curl");
    }

    #[test]
    fn exe_cut_to_max_len() {
        // 'é' is two bytes, so byte `MAX_EXE_LEN` falls inside a character.
        let long = format!("/{}", "é".repeat(MAX_EXE_LEN));
        let exe = exe_path(long);
        assert!(exe.len() <= MAX_EXE_LEN, "{} bytes", exe.len());
        assert_eq!(exe.len(), MAX_EXE_LEN - 1);
        assert!(exe.starts_with("/éé"));
    }

    #[test]
    fn exe_short_kept() {
        assert_eq!(exe_path("/usr/bin/python3".to_owned()), "/usr/bin/python3");
    }

    #[test]
    fn exe_cut_at_nul() {
        assert_eq!(exe_path("/bin/sh\0junk".to_owned()), "/bin/sh");
    }

    #[test]
    fn exe_relative_replaced() {
        assert_eq!(exe_path("python3".to_owned()), UNKNOWN_EXE);
    }

    #[test]
    fn comm_cut_at_nul() {
        assert_eq!(command_name("sh\0x".to_owned(), "/bin/dash"), "sh");
        assert_eq!(command_name("\0x".to_owned(), "/bin/dash"), "dash");
    }

    #[test]
    fn process_exe_capped() {
        let procfs = ProcFs::new("/nonexistent-proc");
        let mut record = record();
        record.exe = format!("/{}", "a".repeat(2 * MAX_EXE_LEN));
        record.parent_exe = format!("/{}", "b".repeat(2 * MAX_EXE_LEN));
        let process = build_process(&record, &procfs, 100);
        assert_eq!(process.exe.len(), MAX_EXE_LEN);
        let parent = process.parent.expect("ppid 48190 gives a parent");
        assert_eq!(parent.exe.len(), MAX_EXE_LEN);
    }

    #[test]
    fn process_passes_schema_validation() {
        let procfs = ProcFs::new("/nonexistent-proc");
        let mut record = record();
        // Lossy decoding of kernel bytes triples each invalid byte, so decoded
        // fields may exceed the kernel's own limits.
        record.exe = format!("/{}", "\u{fffd}".repeat(MAX_EXE_LEN));
        record.parent_exe = format!("/{}\0tail", "x".repeat(MAX_EXE_LEN));
        record.comm = "\u{fffd}".repeat(15);
        record.args = vec!["\u{fffd}".repeat(MAX_ARGS_BYTES); 2];
        let process = build_process(&record, &procfs, 100);
        let mut read = tokenguard_core::conformance::sample_read("/bin/a", "a");
        read.process = process;
        let now = read.observed_at;
        assert_eq!(read.validate(now), Ok(()));
    }

    #[test]
    fn names_match_schema_check() {
        let cases = [
            "prod".to_owned(),
            "a b".to_owned(),
            "a".repeat(MAX_NAME_LEN),
            "a".repeat(MAX_NAME_LEN + 1),
            "é".repeat(MAX_NAME_LEN / 2),
            "é".repeat(MAX_NAME_LEN / 2 + 1),
            String::new(),
            "prod/eu".to_owned(),
            "prod\n".to_owned(),
            "prod\u{85}".to_owned(),
        ];
        for name in cases {
            let mut read = tokenguard_core::conformance::sample_read("/bin/a", "a");
            read.cluster = name.clone();
            let now = read.observed_at;
            let schema_accepts = read.validate(now).is_ok();
            assert_eq!(is_valid_name(&name), schema_accepts, "{name:?}");
        }
    }

    #[test]
    fn replay_record_json_round_trips() {
        let json = serde_json::to_string(&record()).unwrap();
        let back: OpenRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record());
        let partial: OpenRecord = serde_json::from_str(r#"{"tgid": 7, "path": "/run/x"}"#).unwrap();
        assert_eq!(partial.tgid, 7);
        assert!(partial.exe.is_empty());
    }
}

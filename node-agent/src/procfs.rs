//! Reads process details from procfs and converts kernel times.
//!
//! The kernel event carries most fields itself. These readers fill the ones
//! it left empty, and are used only when `/proc/<pid>/stat` still shows the
//! same start time, so a reused pid never lends its details to an exited
//! reader.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rustix::time::{ClockId, clock_gettime};
use thiserror::Error;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Default mount point of procfs.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// A failure to read or parse a procfs file.
#[derive(Debug, Error)]
pub enum ProcError {
    /// The file could not be read, usually because the process exited.
    #[error("failed to read {path}: {source}; the process may have exited")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not have the layout of its procfs man page (proc_pid_stat(5)).
    #[error("invalid {path}: {reason}; expected the format of proc(5)")]
    Format { path: PathBuf, reason: &'static str },
}

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    /// Command name, without the surrounding parentheses.
    pub comm: String,
    /// Field 3: `R` running, `S` sleeping, `Z` zombie, `X` dead, and so on.
    pub state: char,
    pub ppid: u32,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses the contents of `/proc/<pid>/stat`.
///
/// The command name is in parentheses and may itself contain spaces and
/// parentheses, so it runs from the first `(` to the last `)`.
pub fn parse_stat(contents: &str) -> Result<Stat, &'static str> {
    let open = contents
        .find('(')
        .ok_or("missing '(' before the command name")?;
    let close = contents
        .rfind(')')
        .ok_or("missing ')' after the command name")?;
    if close < open {
        return Err("')' before '('");
    }
    let pid = contents[..open]
        .trim()
        .parse()
        .map_err(|_| "field 1 (pid) is not a number")?;
    let comm = contents[open + 1..close].to_owned();
    // Fields from 3 (state) on follow the command name.
    let rest: Vec<&str> = contents[close + 1..].split_ascii_whitespace().collect();
    let field = |number: usize| rest.get(number - 3).copied();
    let state = field(3)
        .and_then(|v| v.chars().next())
        .ok_or("field 3 (state) is missing")?;
    let ppid = field(4)
        .and_then(|v| v.parse().ok())
        .ok_or("field 4 (ppid) is missing or not a number")?;
    let start_time = field(22)
        .and_then(|v| v.parse().ok())
        .ok_or("field 22 (starttime) is missing or not a number")?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid,
        start_time,
    })
}

/// Parses the real uid from the `Uid:` line of `/proc/<pid>/status`.
pub fn parse_status_uid(contents: &str) -> Option<u32> {
    contents
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_ascii_whitespace().next())
        .and_then(|real| real.parse().ok())
}

/// Splits `/proc/<pid>/cmdline`, whose arguments each end in a NUL byte.
pub fn parse_cmdline(contents: &[u8]) -> Vec<String> {
    let trimmed = contents.strip_suffix(&[0]).unwrap_or(contents);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Reader for one procfs mount, normally `/proc` of the host pid namespace.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs::new(DEFAULT_PROC_ROOT)
    }
}

impl ProcFs {
    /// Builds a reader for procfs mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> ProcFs {
        ProcFs { root: root.into() }
    }

    /// Returns the procfs mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, pid: u32, name: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(name)
    }

    fn read(&self, pid: u32, name: &str) -> Result<Vec<u8>, ProcError> {
        let path = self.file(pid, name);
        std::fs::read(&path).map_err(|source| ProcError::Read { path, source })
    }

    /// Reads and parses `/proc/<pid>/stat`.
    pub fn stat(&self, pid: u32) -> Result<Stat, ProcError> {
        let bytes = self.read(pid, "stat")?;
        parse_stat(&String::from_utf8_lossy(&bytes)).map_err(|reason| ProcError::Format {
            path: self.file(pid, "stat"),
            reason,
        })
    }

    /// Returns whether `pid` is still the process that started at `start_time` ticks.
    pub fn is_same_process(&self, pid: u32, start_time: u64) -> bool {
        self.stat(pid)
            .is_ok_and(|stat| stat.start_time == start_time)
    }

    /// Reads the target of `/proc/<pid>/exe`.
    pub fn exe(&self, pid: u32) -> Result<String, ProcError> {
        let path = self.file(pid, "exe");
        std::fs::read_link(&path)
            .map(|target| target.to_string_lossy().into_owned())
            .map_err(|source| ProcError::Read { path, source })
    }

    /// Reads `/proc/<pid>/cmdline` as a list of arguments.
    pub fn cmdline(&self, pid: u32) -> Result<Vec<String>, ProcError> {
        self.read(pid, "cmdline").map(|bytes| parse_cmdline(&bytes))
    }

    /// Reads the real uid from `/proc/<pid>/status`.
    pub fn uid(&self, pid: u32) -> Result<u32, ProcError> {
        let bytes = self.read(pid, "status")?;
        parse_status_uid(&String::from_utf8_lossy(&bytes)).ok_or_else(|| ProcError::Format {
            path: self.file(pid, "status"),
            reason: "missing or invalid Uid line",
        })
    }

    /// Reads `/proc/<pid>/comm` without its trailing newline.
    pub fn comm(&self, pid: u32) -> Result<String, ProcError> {
        let bytes = self.read(pid, "comm")?;
        Ok(String::from_utf8_lossy(&bytes)
            .trim_end_matches('\n')
            .to_owned())
    }
}

/// Returns `sysconf(_SC_CLK_TCK)`, the unit of start times in procfs.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Converts a kernel `start_boottime` in nanoseconds to clock ticks, rounding
/// down as the kernel's `nsec_to_clock_t` does for field 22 of `stat`.
pub fn boot_ns_to_ticks(nanos: u64, ticks_per_second: u64) -> u64 {
    if ticks_per_second == 0 {
        return 0;
    }
    if NANOS_PER_SECOND.is_multiple_of(ticks_per_second) {
        nanos / (NANOS_PER_SECOND / ticks_per_second)
    } else {
        let ticks = u128::from(nanos) * u128::from(ticks_per_second) / u128::from(NANOS_PER_SECOND);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

/// Converts a `CLOCK_BOOTTIME` reading, as from `bpf_ktime_get_boot_ns`, to
/// UTC, using the current offset between the wall clock and the boot clock.
///
/// The offset is read at each call, so wall clock steps (NTP, suspend) apply
/// to events converted after them.
pub fn boot_ns_to_utc(boot_nanos: u64) -> DateTime<Utc> {
    let realtime = timespec_nanos(clock_gettime(ClockId::Realtime));
    let boottime = timespec_nanos(clock_gettime(ClockId::Boottime));
    let wall = realtime - boottime + i128::from(boot_nanos);
    let wall = i64::try_from(wall).unwrap_or(i64::MAX);
    DateTime::from_timestamp_nanos(wall)
}

/// Returns the current `CLOCK_BOOTTIME` reading in nanoseconds.
pub fn boot_ns_now() -> u64 {
    u64::try_from(timespec_nanos(clock_gettime(ClockId::Boottime))).unwrap_or(0)
}

fn timespec_nanos(time: rustix::time::Timespec) -> i128 {
    i128::from(time.tv_sec) * i128::from(NANOS_PER_SECOND) + i128::from(time.tv_nsec)
}

/// Reads `/proc/sys/kernel/random/boot_id` under `proc_root`.
pub fn read_boot_id(proc_root: &Path) -> Result<String, ProcError> {
    let path = proc_root.join("sys/kernel/random/boot_id");
    let contents = std::fs::read_to_string(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    let boot_id = contents.trim();
    if boot_id.is_empty() || !boot_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProcError::Format {
            path,
            reason: "expected a UUID",
        });
    }
    Ok(boot_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines in the layout of Linux 6.x, with the tail of the 52 fields.
    const PYTHON: &str = "48211 (python3) S 48190 48211 48190 0 -1 4194560 8612 0 0 0 41 9 0 0 20 0 4 0 1834211 1093865472 9830 18446744073709551615 94000000000000 94000000002000 140720000000000 0 0 0 0 16781312 134234626 0 0 0 17 1 0 0 0 0 0 94000000010000 94000000011000 94000020000000 140720000001000 140720000001100 140720000001100 140720000002000 0\n";
    const ODD_COMM: &str = "777 (my (evil) app) R 1 777 777 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 99 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_parsed() {
        let stat = parse_stat(PYTHON).unwrap();
        assert_eq!(stat.pid, 48211);
        assert_eq!(stat.comm, "python3");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 48190);
        assert_eq!(stat.start_time, 1834211);
    }

    #[test]
    fn stat_comm_with_spaces_and_parens() {
        let stat = parse_stat(ODD_COMM).unwrap();
        assert_eq!(stat.comm, "my (evil) app");
        assert_eq!(stat.state, 'R');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.start_time, 99);

        let closing = "12 (a) b) S 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0\n";
        let stat = parse_stat(closing).unwrap();
        assert_eq!(stat.comm, "a) b");
        assert_eq!(stat.start_time, 4242);
    }

    #[test]
    fn stat_truncated_rejected() {
        assert!(parse_stat("1 (init) S 0 1 1").is_err());
        assert!(parse_stat("garbage").is_err());
        assert!(parse_stat("x (init) S 0").is_err());
    }

    #[test]
    fn own_stat_matches_procfs() {
        let procfs = ProcFs::default();
        let pid = std::process::id();
        let stat = procfs.stat(pid).unwrap();
        assert_eq!(stat.pid, pid);
        assert!(procfs.is_same_process(pid, stat.start_time));
        assert!(!procfs.is_same_process(pid, stat.start_time + 1));
        assert!(procfs.exe(pid).unwrap().starts_with('/'));
        assert!(!procfs.cmdline(pid).unwrap().is_empty());
        assert_eq!(procfs.uid(pid).unwrap(), rustix::process::getuid().as_raw());
        assert!(!procfs.comm(pid).unwrap().is_empty());
    }

    #[test]
    fn status_uid_is_real_uid() {
        let status = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t48211\nPid:\t48211\nPPid:\t48190\nUid:\t1000\t0\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status_uid(status), Some(1000));
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
    }

    #[test]
    fn cmdline_split_on_nul() {
        assert_eq!(
            parse_cmdline(b"python3\0-c\0import boto3\0"),
            vec!["python3", "-c", "import boto3"]
        );
        assert_eq!(parse_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn ticks_from_nanoseconds() {
        assert_eq!(boot_ns_to_ticks(18_342_119_999_999, 100), 1_834_211);
        assert_eq!(boot_ns_to_ticks(1_000_000_000, 1000), 1000);
        assert_eq!(boot_ns_to_ticks(1_000_000_000, 300), 300);
        assert_eq!(boot_ns_to_ticks(5, 0), 0);
    }

    #[test]
    fn ticks_match_own_stat() {
        // The kernel derives field 22 from start_boottime in nanoseconds, so
        // converting "now" must land after this process's start.
        let hz = clock_ticks_per_second();
        let start = ProcFs::default()
            .stat(std::process::id())
            .unwrap()
            .start_time;
        assert!(boot_ns_to_ticks(boot_ns_now(), hz) >= start);
    }

    #[test]
    fn boot_time_to_utc_is_now() {
        let converted = boot_ns_to_utc(boot_ns_now());
        let skew = (Utc::now() - converted).num_milliseconds().abs();
        assert!(skew < 1000, "boot clock conversion off by {skew} ms");
    }

    #[test]
    fn boot_id_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sys/kernel/random");
        std::fs::create_dir_all(&file).unwrap();
        std::fs::write(
            file.join("boot_id"),
            "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10\n",
        )
        .unwrap();
        assert_eq!(
            read_boot_id(dir.path()).unwrap(),
            "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10"
        );
        assert!(read_boot_id(Path::new("/nonexistent")).is_err());
    }
}

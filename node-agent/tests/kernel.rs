//! Kernel tests of the token open probe.
//!
//! Each test loads the real eBPF program into the running kernel, opens token files laid out
//! like a pod's projected volume and checks the events it reports. They need root, BTF at
//! /sys/kernel/btf/vmlinux and the syscalls tracepoints. When no tracefs is mounted, the tests
//! mount it at /sys/kernel/tracing.
//!
//! Pod-side opens run in a private mount namespace (`unshare --mount --propagation private`)
//! where a tmpfs hides /var and bind mounts put the test volumes at
//! /var/run/secrets/.../serviceaccount, so nothing is written to the host's /var. Tests run in
//! parallel, each with its own probe, and pick their events by the opener's pid.

use tokenguard_agent::ebpf;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ebpf::{
    Counters, DecodeError, Hook, OpenSyscall, Probe, ProbeError, ProbeOptions, TokenOpen,
    check_relocations, clean_token_path,
};

/// Kubelet atomic-writer directory used in every fake volume.
const TIMESTAMP_DIR: &str = "..2026_12_04_09_00_00.123456789";
const IRSA_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const POD_IDENTITY_DIR: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
const DEFAULT_SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const POD_UID: &str = "5d0c5c4e-2b1f-4c8e-9a57-1f0e1d2c3b4a";

/// Environment variable that turns `opener_helper` into the opener process.
const OPENER_ENV: &str = "TOKENGUARD_TEST_OPENER";
/// Thread name the opener sets, so its events have a known comm.
const OPENER_COMM: &str = "tg-opener";
/// Thread name of the opener's opening thread, which events must not report.
const OPENER_THREAD_COMM: &str = "tg-worker";
/// Prefix of the lines the opener prints about itself.
const OPENER_LINE: &str = "tokenguard-opener ";
/// Prefix of the line the sandbox script prints with its mount namespace.
const SANDBOX_NS_LINE: &str = "tokenguard-sandbox-ns ";

/// Time to wait for an expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// `USER_HZ`, the unit of /proc/<pid>/stat start times: 100 on x86_64 and arm64.
const USER_HZ: u64 = 100;

/// Lock file that every test holds shared, and the tests that fill the ring buffer or read
/// exact counters hold exclusive. A burst of events would otherwise overflow the ring buffers of
/// the other tests' probes. It is a file lock (flock), so it also orders concurrent runs of
/// this test binary.
fn ring_buffer_lock(exclusive: bool) -> fs::File {
    let path = std::env::temp_dir().join("tokenguard-kernel-tests.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("failed to open lock file {}: {error}", path.display()));
    let locked = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    locked.unwrap_or_else(|error| panic!("failed to lock {}: {error}", path.display()));
    file
}

/// Makes the names of the temporary roots unique within this process.
static ROOT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Sets up a temporary root with fake token volumes, removed on drop.
struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let id = ROOT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("tokenguard-kernel-{}-{id}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        assert!(
            !root.starts_with("/var"),
            "temp dir {} is under /var, which the sandbox hides: set TMPDIR elsewhere",
            root.display()
        );

        // Volumes bind-mounted into the sandbox.
        projected_volume(&root.join("irsa"), "token", "fake-irsa-token");
        projected_volume(
            &root.join("pod-identity"),
            "eks-pod-identity-token",
            "fake-pod-identity-token",
        );
        projected_volume(&root.join("default-sa"), "token", "fake-kubernetes-token");

        // The kubelet's copies on the node.
        let projected = root.join(format!(
            "var/lib/kubelet/pods/{POD_UID}/volumes/kubernetes.io~projected"
        ));
        projected_volume(&projected.join("aws-iam-token"), "token", "fake-irsa-token");
        projected_volume(
            &projected.join("eks-pod-identity-token"),
            "eks-pod-identity-token",
            "fake-pod-identity-token",
        );
        projected_volume(
            &projected.join("kube-api-access-x7k2p"),
            "token",
            "fake-kubernetes-token",
        );

        // A token-named file in no token directory.
        fs::create_dir_all(root.join("other")).unwrap();
        fs::write(root.join("other/token"), "not-a-token").unwrap();
        Fixture { root }
    }

    fn kubelet_volume(&self, volume: &str) -> PathBuf {
        self.root.join(format!(
            "var/lib/kubelet/pods/{POD_UID}/volumes/kubernetes.io~projected/{volume}"
        ))
    }

    /// Builds a command that runs `program args` in a private mount namespace with the fake
    /// volumes mounted at the pod paths, from working directory `cwd`.
    fn sandbox(&self, cwd: &str, program: &Path, args: &[&str]) -> Command {
        let script = format!(
            r#"set -e
mount -t tmpfs tokenguard-test /var
mkdir -p {IRSA_DIR} {POD_IDENTITY_DIR} {DEFAULT_SA_DIR}
mount --bind "$1" {IRSA_DIR}
mount --bind "$2" {POD_IDENTITY_DIR}
mount --bind "$3" {DEFAULT_SA_DIR}
echo "{SANDBOX_NS_LINE}$(readlink /proc/$$/ns/mnt)" >&2
cd "$4"
shift 4
exec "$@""#
        );
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(self.root.join("irsa"))
            .arg(self.root.join("pod-identity"))
            .arg(self.root.join("default-sa"))
            .arg(cwd)
            .arg(program)
            .args(args);
        command
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Lays out a directory like the kubelet's atomic writer does: the file in a timestamped
/// directory, `..data` pointing at that directory and `<file> -> ..data/<file>`.
fn projected_volume(dir: &Path, file: &str, content: &str) {
    fs::create_dir_all(dir.join(TIMESTAMP_DIR)).unwrap();
    fs::write(dir.join(TIMESTAMP_DIR).join(file), content).unwrap();
    symlink(TIMESTAMP_DIR, dir.join("..data")).unwrap();
    symlink(format!("..data/{file}"), dir.join(file)).unwrap();
}

/// Mounts tracefs at /sys/kernel/tracing when neither standard place has it.
fn ensure_tracefs() {
    static MOUNT: Once = Once::new();
    MOUNT.call_once(|| {
        let mounted = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .any(|path| Path::new(path).join("events/syscalls").is_dir());
        if mounted {
            return;
        }
        let status = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .expect("failed to run mount");
        assert!(
            status.success(),
            "mount -t tracefs nodev /sys/kernel/tracing failed: {status}"
        );
    });
}

/// Loads the probe with every open sent, so tests can count one event per open. Needs root.
fn load_probe() -> Probe {
    load_probe_with(ProbeOptions {
        repeat_window: Duration::ZERO,
    })
}

fn load_probe_with(options: ProbeOptions) -> Probe {
    assert_eq!(
        fs::metadata("/proc/self").unwrap().uid(),
        0,
        "the kernel tests load eBPF programs and need root"
    );
    ensure_tracefs();
    Probe::load_with(options).expect("failed to load the probe")
}

/// Collects events from process `tgid` until `count` arrived or the timeout passed.
async fn events_from(
    probe: &mut Probe,
    tgid: u32,
    count: usize,
    timeout: Duration,
) -> Vec<TokenOpen> {
    let deadline = Instant::now() + timeout;
    let mut events = Vec::new();
    while events.len() < count {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, probe.next()).await {
            Ok(Some(event)) if event.tgid == tgid => events.push(event),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the probe's ring buffer stopped"),
            Err(_) => break,
        }
    }
    events
}

/// Waits for a child and checks that it exited with status 0.
fn wait_success(child: Child) -> Output {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "opener failed with {}: stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn spawn(mut command: Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start the opener")
}

/// Returns the mount namespace link text, e.g. `mnt:[4026531841]`, as an inode number.
fn ns_inum(link: &str) -> u32 {
    link.trim()
        .strip_prefix("mnt:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inum| inum.parse().ok())
        .unwrap_or_else(|| panic!("invalid mount namespace link {link:?}"))
}

fn host_mnt_ns() -> u32 {
    ns_inum(
        &fs::read_link("/proc/self/ns/mnt")
            .unwrap()
            .to_string_lossy(),
    )
}

/// Returns the mount namespace the sandbox script printed on stderr.
fn sandbox_mnt_ns(output: &Output) -> u32 {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix(SANDBOX_NS_LINE))
        .unwrap_or_else(|| panic!("sandbox printed no namespace line: {stderr:?}"));
    ns_inum(line)
}

/// Returns `key value` pairs that the opener printed on stdout.
fn opener_report(output: &Output) -> HashMap<String, String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        // libtest prints "test opener_helper ... " before the first line.
        .filter_map(|line| line.split_once(OPENER_LINE).map(|(_, report)| report))
        .filter_map(|line| line.split_once(' '))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Field 22 of /proc/<pid>/stat: the start time in `USER_HZ` ticks since boot.
fn proc_start_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The comm in brackets may contain spaces, so count fields after the last ')'.
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(19).unwrap().parse().unwrap()
}

/// `CLOCK_BOOTTIME` in nanoseconds from /proc/uptime, which has 10 ms resolution.
fn boottime_ns() -> u64 {
    let uptime = fs::read_to_string("/proc/uptime").unwrap();
    let seconds: f64 = uptime.split(' ').next().unwrap().parse().unwrap();
    (seconds * 1e9) as u64
}

/// cgroup v2 id of this process: the inode of its directory in the cgroup2 mount.
fn own_cgroup_id() -> Option<u64> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cgroup.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount_point = mountinfo.lines().find_map(|line| {
        let (fields, fs_type) = line.split_once(" - ")?;
        fs_type
            .starts_with("cgroup2 ")
            .then(|| fields.split(' ').nth(4).unwrap().to_owned())
    })?;
    let dir = format!("{mount_point}{path}");
    Some(fs::metadata(dir).ok()?.ino())
}

/// Finds a program on PATH and resolves symlinks, as the kernel's exe_file does.
fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} not found on PATH"))
        .canonicalize()
        .unwrap()
}

fn test_binary() -> PathBuf {
    std::env::current_exe().unwrap().canonicalize().unwrap()
}

/// Command line that re-runs this binary as the opener with the given operations.
fn opener_args() -> [&'static str; 4] {
    [
        "--exact",
        "opener_helper",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// Checks the fields every event shares: the opener is a child of this test process.
fn assert_common(event: &TokenOpen, before_ns: u64) {
    let after_ns = boottime_ns();
    let slack_ns = 20_000_000;
    assert!(
        event.timestamp_boot_ns + slack_ns >= before_ns,
        "timestamp before the open"
    );
    assert!(
        event.timestamp_boot_ns <= after_ns + slack_ns,
        "timestamp after the open"
    );

    // The parent is this test process, run as root.
    assert_eq!(event.ppid, std::process::id());
    assert_eq!(event.uid, 0);
    assert_eq!(event.gid, 0);
    assert_eq!(
        event.parent_comm,
        fs::read_to_string("/proc/self/comm").unwrap().trim_end()
    );
    assert_eq!(Path::new(&event.parent_exe), test_binary());
    assert!(!event.parent_exe_truncated);
    assert_eq!(
        event.parent_start_boottime_ns / (1_000_000_000 / USER_HZ),
        proc_start_ticks("self")
    );

    // The opener started after its parent and before the open.
    assert!(event.start_boottime_ns >= event.parent_start_boottime_ns);
    assert!(event.start_boottime_ns <= event.timestamp_boot_ns);

    // Children inherit the cgroup.
    if let Some(cgroup_id) = own_cgroup_id() {
        assert_eq!(event.cgroup_id, cgroup_id);
    }

    // The open itself.
    assert!(event.fd >= 0);
    assert_eq!(event.f_mode & 1, 1, "f_mode lacks FMODE_READ");
    assert!(!event.path_truncated);
    assert!(!event.exe_truncated);
    assert!(!event.args_truncated);
}

/// Runs `cat <paths>` in the sandbox and returns its events and its mount namespace.
async fn cat_in_sandbox(
    probe: &mut Probe,
    cwd: &str,
    paths: &[&str],
    count: usize,
) -> (Vec<TokenOpen>, u32) {
    let fixture = Fixture::new();
    let before_ns = boottime_ns();
    let child = spawn(fixture.sandbox(cwd, &which("cat"), paths));
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let events = events_from(probe, pid, count, EVENT_TIMEOUT).await;
    for event in &events {
        assert_common(event, before_ns);
    }
    (events, sandbox_mnt_ns(&output))
}

/// Checks an event of `cat` opening the IRSA token in the sandbox.
fn assert_sandbox_cat(event: &TokenOpen, mnt_ns: u32, args: &[&str]) {
    let cat = which("cat");
    let mut expected_args = vec![cat.to_str().unwrap()];
    expected_args.extend_from_slice(args);

    assert_eq!(event.token_path, format!("{IRSA_DIR}/token"));
    assert_eq!(event.path, format!("{IRSA_DIR}/{TIMESTAMP_DIR}/token"));
    assert_eq!(event.comm, "cat");
    assert_eq!(Path::new(&event.exe), cat);
    assert_eq!(event.args, expected_args);
    assert_eq!(event.syscall, OpenSyscall::Openat);
    assert_eq!(event.tid, event.tgid);
    assert_eq!(event.mnt_ns_inum, mnt_ns);
    assert_ne!(event.mnt_ns_inum, host_mnt_ns());
    assert_eq!(event.flags & libc::O_ACCMODE as u32, libc::O_RDONLY as u32);
}

/// Runs the opener (this binary) with operations `ops`, in the sandbox when `sandbox` is true.
async fn run_opener(
    probe: &mut Probe,
    fixture: &Fixture,
    sandbox: bool,
    ops: &str,
    count: usize,
) -> (Vec<TokenOpen>, HashMap<String, String>) {
    let binary = test_binary();
    let mut command = if sandbox {
        fixture.sandbox("/", &binary, &opener_args())
    } else {
        let mut command = Command::new(&binary);
        command.args(opener_args());
        command
    };
    command.env(OPENER_ENV, ops);

    let before_ns = boottime_ns();
    let child = spawn(command);
    let pid = child.id();
    let output = wait_success(child);
    let report = opener_report(&output);
    let events = events_from(probe, pid, count, EVENT_TIMEOUT).await;
    for event in &events {
        assert_common(event, before_ns);
        assert_eq!(event.comm, OPENER_COMM);
        assert_eq!(Path::new(&event.exe), binary);
        assert_eq!(event.args[0], binary.to_str().unwrap());
        assert_eq!(event.args[1..], opener_args());
        assert_eq!(event.tid.to_string(), report["tid"]);
        assert_eq!(event.mnt_ns_inum, ns_inum(&report["mnt_ns"]));
        assert_eq!(
            event.start_boottime_ns / (1_000_000_000 / USER_HZ),
            report["start_ticks"].parse::<u64>().unwrap()
        );
    }
    (events, report)
}

/// Opener process: runs the operations in `TOKENGUARD_TEST_OPENER` when this binary is
/// started by `run_opener`, and passes at once in a normal test run.
///
/// Each line is `<open|openat|openat2> <read|write|path> <count> <path>`.
#[test]
fn opener_helper() {
    let Ok(ops) = std::env::var(OPENER_ENV) else {
        return;
    };
    // The harness runs this test on a worker thread, so the opening thread and
    // the group leader get different names: events must carry the leader's.
    // The leader is named last, which also holds with --test-threads=1.
    fs::write("/proc/thread-self/comm", OPENER_THREAD_COMM).unwrap();
    fs::write("/proc/self/comm", OPENER_COMM).unwrap();
    let tid = fs::read_link("/proc/thread-self").unwrap();
    let tid = tid.file_name().unwrap().to_string_lossy();
    let mnt_ns = fs::read_link("/proc/self/ns/mnt").unwrap();
    println!("{OPENER_LINE}pid {}", std::process::id());
    println!("{OPENER_LINE}tid {tid}");
    println!("{OPENER_LINE}mnt_ns {}", mnt_ns.to_string_lossy());
    println!("{OPENER_LINE}start_ticks {}", proc_start_ticks("self"));

    for op in ops.lines() {
        let fields: Vec<&str> = op.splitn(4, ' ').collect();
        let [syscall, mode, count, path] = fields[..] else {
            panic!("invalid opener operation {op:?}");
        };
        let flags = match mode {
            "read" => libc::O_RDONLY,
            "write" => libc::O_WRONLY,
            "path" => libc::O_PATH,
            other => panic!("invalid open mode {other:?}"),
        };
        for _ in 0..count.parse::<u32>().unwrap() {
            let fd = open_with(syscall, path, flags);
            assert!(
                fd >= 0,
                "{syscall} {path} failed: {}",
                std::io::Error::last_os_error()
            );
            close(fd);
        }
    }
}

/// `struct open_how` from <linux/openat2.h>. libc's version is non-exhaustive, so it cannot
/// be built here.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` with the named syscall and returns the fd or -1.
#[expect(
    unsafe_code,
    reason = "calls the open syscalls directly, which libc does not wrap"
)]
fn open_with(syscall: &str, path: &str, flags: libc::c_int) -> i64 {
    let path = CString::new(path).unwrap();
    let flags = flags | libc::O_CLOEXEC;
    match syscall {
        // SAFETY: path is a NUL-terminated string that outlives the call.
        "openat" => unsafe {
            libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, 0)
        },
        "openat2" => {
            let how = OpenHow {
                flags: flags as u64,
                mode: 0,
                resolve: 0,
            };
            // SAFETY: path and how outlive the call, and the size passed is that of how.
            unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    &raw const how,
                    size_of::<OpenHow>(),
                )
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: path is a NUL-terminated string that outlives the call.
        "open" => unsafe { libc::syscall(libc::SYS_open, path.as_ptr(), flags, 0) },
        other => panic!("unsupported syscall {other:?}"),
    }
}

#[expect(unsafe_code, reason = "closes an fd returned by a raw open syscall")]
fn close(fd: i64) {
    // SAFETY: fd was just returned by an open syscall and is owned by no other object.
    let _ = unsafe { libc::close(fd as libc::c_int) };
}

#[tokio::test]
async fn absolute_path_through_symlinks() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let path = format!("{IRSA_DIR}/token");

    let (events, mnt_ns) = cat_in_sandbox(&mut probe, "/", &[&path], 1).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    assert_sandbox_cat(&events[0], mnt_ns, &[&path]);
}

#[tokio::test]
async fn relative_path_after_cd() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();

    let (events, mnt_ns) = cat_in_sandbox(&mut probe, IRSA_DIR, &["token"], 1).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    assert_sandbox_cat(&events[0], mnt_ns, &["token"]);
}

#[tokio::test]
async fn data_dir_and_timestamped_file() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let through_data = format!("{IRSA_DIR}/..data/token");
    let direct = format!("{IRSA_DIR}/{TIMESTAMP_DIR}/token");

    let (events, mnt_ns) = cat_in_sandbox(&mut probe, "/", &[&through_data, &direct], 2).await;

    assert_eq!(events.len(), 2, "{events:#?}");
    for event in &events {
        assert_sandbox_cat(event, mnt_ns, &[&through_data, &direct]);
    }
}

#[tokio::test]
async fn pod_identity_token() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let path = format!("{POD_IDENTITY_DIR}/eks-pod-identity-token");

    let (events, mnt_ns) = cat_in_sandbox(&mut probe, "/", &[&path], 1).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.token_path, path);
    assert_eq!(
        event.path,
        format!("{POD_IDENTITY_DIR}/{TIMESTAMP_DIR}/eks-pod-identity-token")
    );
    assert_eq!(event.comm, "cat");
    assert_eq!(event.mnt_ns_inum, mnt_ns);
}

#[tokio::test]
async fn proc_root_from_host() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let fixture = Fixture::new();

    // A sandbox process keeps the namespace alive while a host process opens through it.
    let mut holder = spawn(fixture.sandbox("/", &which("sleep"), &["60"]));
    let holder_pid = holder.id();
    let ns_line = BufReader::new(holder.stderr.take().unwrap())
        .lines()
        .next()
        .expect("sandbox exited before its setup finished")
        .unwrap();
    let holder_ns = ns_inum(ns_line.strip_prefix(SANDBOX_NS_LINE).unwrap());
    let path = format!("/proc/{holder_pid}/root{IRSA_DIR}/token");

    let before_ns = boottime_ns();
    let cat = spawn({
        let mut command = Command::new(which("cat"));
        command.arg(&path);
        command
    });
    let pid = cat.id();
    let output = wait_success(cat);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let events = events_from(&mut probe, pid, 1, EVENT_TIMEOUT).await;

    assert_eq!(output.stdout, b"fake-irsa-token");
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_common(event, before_ns);
    assert_eq!(event.token_path, format!("{IRSA_DIR}/token"));
    assert_eq!(event.path, format!("{IRSA_DIR}/{TIMESTAMP_DIR}/token"));
    assert_eq!(event.comm, "cat");
    assert_eq!(event.args, [which("cat").to_str().unwrap(), &path]);
    assert_eq!(event.mnt_ns_inum, host_mnt_ns());
    assert_ne!(event.mnt_ns_inum, holder_ns);
}

#[tokio::test]
async fn openat2_syscall() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let fixture = Fixture::new();
    let ops = format!("openat2 read 1 {IRSA_DIR}/token");

    let (events, report) = run_opener(&mut probe, &fixture, true, &ops, 1).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.syscall, OpenSyscall::Openat2);
    assert_eq!(event.token_path, format!("{IRSA_DIR}/token"));
    assert_eq!(event.path, format!("{IRSA_DIR}/{TIMESTAMP_DIR}/token"));
    assert_ne!(event.mnt_ns_inum, host_mnt_ns());
    assert_ne!(
        event.tid.to_string(),
        event.tgid.to_string(),
        "libtest opens in a thread"
    );
    assert_eq!(report["tid"], event.tid.to_string());
}

#[tokio::test]
async fn legacy_open_syscall() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    if !probe.tracepoints().contains(&"sys_exit_open") {
        eprintln!("skipped: this kernel has no sys_exit_open tracepoint");
        return;
    }
    let fixture = Fixture::new();
    let ops = format!("open read 1 {IRSA_DIR}/token");

    let (events, _) = run_opener(&mut probe, &fixture, true, &ops, 1).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].syscall, OpenSyscall::Open);
    assert_eq!(events[0].token_path, format!("{IRSA_DIR}/token"));
}

#[tokio::test]
async fn kubelet_host_paths() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let fixture = Fixture::new();
    let irsa = fixture.kubelet_volume("aws-iam-token").join("token");
    let pod_identity = fixture
        .kubelet_volume("eks-pod-identity-token")
        .join("eks-pod-identity-token");
    let ops = format!(
        "openat read 1 {}\nopenat read 1 {}",
        irsa.display(),
        pod_identity.display()
    );

    let (events, _) = run_opener(&mut probe, &fixture, false, &ops, 2).await;

    assert_eq!(events.len(), 2, "{events:#?}");
    let expected = [
        (fixture.kubelet_volume("aws-iam-token"), "token"),
        (
            fixture.kubelet_volume("eks-pod-identity-token"),
            "eks-pod-identity-token",
        ),
    ];
    for (event, (volume, file)) in events.iter().zip(expected) {
        assert_eq!(Path::new(&event.token_path), volume.join(file));
        assert_eq!(
            Path::new(&event.path),
            volume.join(TIMESTAMP_DIR).join(file)
        );
        assert_eq!(event.mnt_ns_inum, host_mnt_ns());
        assert_eq!(event.syscall, OpenSyscall::Openat);
    }
}

#[tokio::test]
async fn other_token_files_ignored() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let fixture = Fixture::new();
    let other = fixture.root.join("other/token");
    let api_access = fixture
        .kubelet_volume("kube-api-access-x7k2p")
        .join("token");
    let sentinel = fixture.kubelet_volume("aws-iam-token").join("token");
    let ops = format!(
        "openat read 1 {}\nopenat read 1 {}\nopenat read 1 {}",
        other.display(),
        api_access.display(),
        sentinel.display()
    );
    let filtered_before = probe.counters().unwrap().path_filtered;

    // The sentinel opens last, so once it arrives any event of the others would be in.
    let (events, _) = run_opener(&mut probe, &fixture, false, &ops, 2).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(Path::new(&events[0].token_path), sentinel);
    let filtered_after = probe.counters().unwrap().path_filtered;
    assert!(filtered_after >= filtered_before + 2);
}

#[tokio::test]
async fn default_service_account_ignored() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let default_token = format!("{DEFAULT_SA_DIR}/token");
    let sentinel = format!("{IRSA_DIR}/token");

    let (events, mnt_ns) = cat_in_sandbox(&mut probe, "/", &[&default_token, &sentinel], 2).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    assert_sandbox_cat(&events[0], mnt_ns, &[&default_token, &sentinel]);
}

#[tokio::test]
async fn write_and_path_opens_ignored() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let fixture = Fixture::new();
    let file = format!("{IRSA_DIR}/{TIMESTAMP_DIR}/token");
    let ops = format!("openat write 1 {file}\nopenat path 1 {file}\nopenat read 1 {file}");

    let (events, _) = run_opener(&mut probe, &fixture, true, &ops, 2).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0].flags & libc::O_ACCMODE as u32,
        libc::O_RDONLY as u32
    );
    assert_eq!(events[0].flags & libc::O_PATH as u32, 0);
}

#[tokio::test]
async fn failed_open_ignored() {
    let _lock = ring_buffer_lock(false);
    let mut probe = load_probe();
    let missing = format!("{IRSA_DIR}/missing/token");
    let sentinel = format!("{IRSA_DIR}/token");

    // cat reports ENOENT for the first file and goes on with the second.
    let (events, mnt_ns) = cat_in_sandbox(&mut probe, "/", &[&missing, &sentinel], 2).await;

    assert_eq!(events.len(), 1, "{events:#?}");
    assert_sandbox_cat(&events[0], mnt_ns, &[&missing, &sentinel]);
}

#[tokio::test]
async fn counters_start_at_zero() {
    // Exclusive, so no other test's events reach this probe's counters.
    let _lock = ring_buffer_lock(true);
    let probe = load_probe();

    assert_eq!(probe.hook(), Hook::Tracepoint);
    assert_eq!(probe.hook().to_string(), "tracepoint");
    assert!(probe.tracepoints().contains(&"sys_exit_openat"));
    assert!(probe.tracepoints().contains(&"sys_exit_openat2"));
    assert_eq!(probe.lost_events().unwrap(), 0);
    assert_eq!(probe.counters().unwrap(), Counters::default());
    assert!(format!("{probe:?}").contains("sys_exit_openat"));
}

#[tokio::test]
async fn full_ring_buffer_counts_lost() {
    let _lock = ring_buffer_lock(true);
    let mut probe = load_probe();
    let fixture = Fixture::new();
    let opens = 1000;
    let token = fixture.kubelet_volume("aws-iam-token").join("token");
    let ops = format!("openat read {opens} {}", token.display());

    // Nothing reads the ring buffer while the opener runs, so it fills up.
    let (_, report) = run_opener(&mut probe, &fixture, false, &ops, 0).await;
    let counters = probe.counters().unwrap();
    let pid = report["pid"].parse().unwrap();
    let events = events_from(&mut probe, pid, counters.submitted as usize, EVENT_TIMEOUT).await;

    assert!(counters.lost > 0, "{counters:?}");
    assert_eq!(counters.lost, probe.lost_events().unwrap());
    assert_eq!(counters.submitted + counters.lost, opens as u64);
    assert_eq!(events.len() as u64, counters.submitted);
}

#[tokio::test]
async fn repeated_opens_folded() {
    let _lock = ring_buffer_lock(true);
    let mut probe = load_probe_with(ProbeOptions::default());
    let fixture = Fixture::new();
    let token = fixture.kubelet_volume("aws-iam-token").join("token");
    let opens = 200;
    let ops = format!("openat read {opens} {}", token.display());

    // 200 opens take well under the one-second window, so one event is sent.
    let (events, report) = run_opener(&mut probe, &fixture, false, &ops, 1).await;
    let pid = report["pid"].parse().unwrap();
    let more = events_from(&mut probe, pid, 1, Duration::from_secs(1)).await;
    let counters = probe.counters().unwrap();

    assert_eq!(events.len(), 1, "one event for the first open");
    assert!(more.is_empty(), "no event for the repeats: {more:?}");
    assert_eq!(counters.submitted, 1, "{counters:?}");
    assert_eq!(counters.repeats, opens - 1, "{counters:?}");
    assert_eq!(counters.lost, 0, "{counters:?}");
}

#[tokio::test]
async fn flood_keeps_other_reader() {
    let _lock = ring_buffer_lock(true);
    let mut probe = load_probe_with(ProbeOptions::default());
    let fixture = Fixture::new();
    let token = fixture.kubelet_volume("aws-iam-token").join("token");

    // Nothing reads the ring buffer while both run. One process opening the token 5000 times
    // would fill it without the repeat window, and the second reader's event would be lost.
    let mut flood = Command::new(test_binary());
    flood
        .args(opener_args())
        .env(OPENER_ENV, format!("openat read 5000 {}", token.display()));
    wait_success(spawn(flood));
    let ops = format!("openat read 1 {}", token.display());
    let (events, _) = run_opener(&mut probe, &fixture, false, &ops, 1).await;
    let counters = probe.counters().unwrap();

    assert_eq!(events.len(), 1, "the second reader's open is reported");
    assert_eq!(counters.lost, 0, "{counters:?}");
    assert!(
        counters.repeats >= 4998,
        "the flood was folded: {counters:?}"
    );
}

#[test]
fn decode_error_names_the_fix() {
    let error = DecodeError::Size { actual: 3 };
    assert!(error.to_string().contains("rebuild"));
    assert_eq!(
        clean_token_path(&format!("{IRSA_DIR}/{TIMESTAMP_DIR}/token")),
        format!("{IRSA_DIR}/token")
    );
}

#[test]
fn load_outside_runtime_fails() {
    let error = Probe::load().unwrap_err();
    assert!(matches!(error, ProbeError::NoRuntime), "{error}");
}

#[test]
fn relocates_against_running_kernel_btf() {
    ensure_tracefs();
    let loaded = check_relocations(Path::new("/sys/kernel/btf/vmlinux")).unwrap();
    assert_eq!(loaded.len(), 3);
}

/// Checks the CO-RE relocations against another kernel's BTF, given as a raw BTF file in
/// `TOKENGUARD_TEST_BTF`. `make test` sets it to the .BTF section of Debian's 6.1 kernel,
/// which `scripts/debian-kernel.sh` extracts.
#[test]
#[ignore = "needs another kernel's BTF in TOKENGUARD_TEST_BTF; make test provides it and runs this"]
fn relocates_against_other_kernel_btf() {
    let path = std::env::var_os("TOKENGUARD_TEST_BTF")
        .expect("TOKENGUARD_TEST_BTF is not set: run scripts/debian-kernel.sh DIR and set it");
    let loaded = check_relocations(Path::new(&path)).unwrap();
    assert_eq!(loaded.len(), 3);
}

#[test]
fn missing_btf_file_is_reported() {
    let error = check_relocations(Path::new("/nonexistent/vmlinux")).unwrap_err();
    assert!(matches!(error, ProbeError::Btf { .. }), "{error}");
    assert!(
        error.to_string().contains("/nonexistent/vmlinux"),
        "{error}"
    );
}

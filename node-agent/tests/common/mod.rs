//! Fixtures shared by the agent's integration tests: a fake procfs and
//! cgroup tree for readers in the fixture pod, and open records.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokenguard_agent::OpenRecord;
use tokenguard_agent::procfs::clock_ticks_per_second;
use tokenguard_agent::sink::SharedWriter;

pub const BOOT_ID: &str = "5f1c6a7e-0b7e-4c41-9d0a-3f3e2a6b9c10";
pub const NODE: &str = "ip-10-0-12-34.eu-west-1.compute.internal";
pub const POD_UID: &str = "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a";
pub const CONTAINER_ID: &str = "3b0f5e4c9a7d2e1f8c6b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
pub const IRSA_PATH: &str =
    "/var/run/secrets/eks.amazonaws.com/serviceaccount/..2026_12_04_09_15_02.3416781092/token";

/// The fixture pod: an EKS pod mutated by the pod identity webhook.
pub fn fixture_pod() -> Value {
    tokenguard_e2e::fixtures::irsa_pod()
}

/// A fake host with procfs at `proc` and cgroup v2 at `cgroup`.
pub struct FakeHost {
    pub dir: tempfile::TempDir,
}

impl FakeHost {
    pub fn new() -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        let random = dir.path().join("proc/sys/kernel/random");
        std::fs::create_dir_all(&random).unwrap();
        std::fs::write(random.join("boot_id"), format!("{BOOT_ID}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("cgroup")).unwrap();
        FakeHost { dir }
    }

    pub fn proc_root(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    pub fn cgroup_root(&self) -> PathBuf {
        self.dir.path().join("cgroup")
    }

    /// Adds a live process `pid` in the fixture pod's container, with the
    /// systemd cgroup driver and containerd.
    pub fn add_pod_process(&self, record: &OpenRecord) {
        let pid_dir = self.proc_root().join(record.tgid.to_string());
        std::fs::create_dir_all(&pid_dir).unwrap();
        let ticks = record.start_boottime_ns / (1_000_000_000 / clock_ticks_per_second());
        let stat = format!(
            "{} ({}) S {} {} {} 0 -1 4194560 8612 0 0 0 41 9 0 0 20 0 4 0 {ticks} 1093865472 9830 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
            record.tgid, record.comm, record.ppid, record.tgid, record.tgid
        );
        std::fs::write(pid_dir.join("stat"), stat).unwrap();
        let uid = POD_UID.replace('-', "_");
        let cgroup = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{CONTAINER_ID}.scope\n"
        );
        std::fs::write(pid_dir.join("cgroup"), cgroup).unwrap();
    }
}

/// Builds an open of the IRSA token by process `pid` running `exe`, at `seconds`
/// after boot.
pub fn open_record(pid: u32, exe: &str, seconds: u64) -> OpenRecord {
    let comm = exe.rsplit('/').next().unwrap().to_owned();
    OpenRecord {
        timestamp_ns: seconds * 1_000_000_000,
        tgid: pid,
        tid: pid,
        ppid: 1,
        uid: 1000,
        gid: 1000,
        args: vec![comm.clone(), "--flag".to_owned()],
        comm,
        parent_comm: "tini".to_owned(),
        exe: exe.to_owned(),
        parent_exe: "/usr/bin/tini".to_owned(),
        args_truncated: false,
        path: IRSA_PATH.to_owned(),
        // One start time per pid, so records of one process agree with its stat.
        start_boottime_ns: u64::from(pid) * 10_000_000,
        parent_start_boottime_ns: 5_000_000_000,
        cgroup_id: 0,
        mnt_ns_inum: 4026532801,
    }
}

/// Returns an in-memory [`SharedWriter`] and a handle to read what was written.
pub fn memory_writer() -> (SharedWriter, Arc<Mutex<Vec<u8>>>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = BufferWriter(buffer.clone());
    (Arc::new(Mutex::new(Box::new(writer))), buffer)
}

/// Lines written so far, parsed as JSON.
pub fn json_lines(buffer: &Arc<Mutex<Vec<u8>>>) -> Vec<Value> {
    let bytes = buffer.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// An `io::Write` into a shared buffer, usable as a tracing writer too.
#[derive(Clone)]
pub struct BufferWriter(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

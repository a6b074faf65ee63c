//! The kernel's event record (`struct tg_event` in `node-agent-ebpf/tokenguard.h`) and its
//! decoding into [`TokenOpen`].

use std::fmt;

use serde::Serialize;
use thiserror::Error;

use super::path::clean_token_path;

const COMM_LEN: usize = 16;
const PATH_LEN: usize = 512;
const EXE_LEN: usize = 256;
const ARGS_LEN: usize = 256;

/// `TG_EVENT_SIZE` in `tokenguard.h`.
pub(crate) const EVENT_SIZE: usize = 1392;

/// Bits of [`RawEvent::truncated`] (`enum tg_truncated`).
const TRUNCATED_PATH: u8 = 1 << 0;
const TRUNCATED_EXE: u8 = 1 << 1;
const TRUNCATED_PARENT_EXE: u8 = 1 << 2;
const TRUNCATED_ARGS: u8 = 1 << 3;

/// Mirror of `struct tg_event`. Field order, types and padding must match the C header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEvent {
    timestamp_ns: u64,
    cgroup_id: u64,
    start_boottime_ns: u64,
    parent_start_boottime_ns: u64,
    tgid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    mnt_ns_inum: u32,
    fd: i32,
    f_flags: u32,
    f_mode: u32,
    path_len: u16,
    exe_len: u16,
    parent_exe_len: u16,
    args_len: u16,
    syscall: u8,
    truncated: u8,
    reserved: [u8; 2],
    comm: [u8; COMM_LEN],
    parent_comm: [u8; COMM_LEN],
    path: [u8; PATH_LEN],
    exe: [u8; EXE_LEN],
    parent_exe: [u8; EXE_LEN],
    args: [u8; ARGS_LEN],
}

const _: () = assert!(size_of::<RawEvent>() == EVENT_SIZE);
const _: () = assert!(std::mem::offset_of!(RawEvent, comm) == 80);

/// Syscall whose exit produced an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenSyscall {
    Open,
    Openat,
    Openat2,
}

impl fmt::Display for OpenSyscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Open => "open",
            Self::Openat => "openat",
            Self::Openat2 => "openat2",
        };
        f.write_str(name)
    }
}

/// One read-open of an AWS web-identity token file, as the kernel reported it.
///
/// Strings are decoded lossily: invalid UTF-8 becomes U+FFFD. "Parent" is the opener's real
/// parent process. Start times are nanoseconds since boot of the thread-group leader, so
/// `start_boottime_ns / (1e9 / CLK_TCK)` equals field 22 of `/proc/<pid>/stat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenOpen {
    /// `CLOCK_BOOTTIME` nanoseconds at the syscall's return.
    pub timestamp_boot_ns: u64,
    /// cgroup v2 id of the opener, the inode number of its cgroup directory.
    pub cgroup_id: u64,
    /// Process id (thread-group id) of the opener.
    pub tgid: u32,
    /// Thread id of the opening thread.
    pub tid: u32,
    pub ppid: u32,
    /// Real uid and gid in the initial user namespace.
    pub uid: u32,
    pub gid: u32,
    /// Inode number of the opener's mount namespace, as in `/proc/<pid>/ns/mnt`.
    pub mnt_ns_inum: u32,
    pub start_boottime_ns: u64,
    pub parent_start_boottime_ns: u64,
    pub syscall: OpenSyscall,
    /// File descriptor returned by the syscall.
    pub fd: i32,
    /// `f_flags` of the opened file: the open flags as the kernel keeps them.
    pub flags: u32,
    /// `f_mode` of the opened file (`FMODE_*` bits).
    pub f_mode: u32,
    /// comm of the opener's thread-group leader, which names the program.
    pub comm: String,
    pub parent_comm: String,
    /// Path relative to the opener's root and mount namespace, after symlinks, e.g.
    /// `/var/run/secrets/eks.amazonaws.com/serviceaccount/..2026_12_04_09_00_00.123456789/token`.
    pub path: String,
    /// [`Self::path`] without the kubelet's `..<timestamp>` or `..data` directory.
    pub token_path: String,
    pub path_truncated: bool,
    /// Executable of the opener, relative to the opener's root.
    pub exe: String,
    pub exe_truncated: bool,
    pub parent_exe: String,
    pub parent_exe_truncated: bool,
    /// Command line of the opener.
    pub args: Vec<String>,
    pub args_truncated: bool,
}

/// Error decoding a ring buffer record.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "ring buffer record has {actual} bytes, expected {EVENT_SIZE}: the agent and its eBPF \
         object disagree on struct tg_event, rebuild both"
    )]
    Size { actual: usize },
    #[error(
        "ring buffer record has unknown syscall id {0}: rebuild the agent with its eBPF object"
    )]
    Syscall(u8),
}

impl RawEvent {
    /// Copies a ring buffer record into a `RawEvent`.
    #[expect(
        unsafe_code,
        reason = "reads a plain-old-data C struct from kernel-written bytes"
    )]
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != EVENT_SIZE {
            return Err(DecodeError::Size {
                actual: bytes.len(),
            });
        }
        // SAFETY: the slice has exactly size_of::<RawEvent>() bytes, read_unaligned does not
        // need alignment, and RawEvent has only integer and byte-array fields, for which every
        // bit pattern is a valid value.
        Ok(unsafe { bytes.as_ptr().cast::<RawEvent>().read_unaligned() })
    }

    /// Converts the record into an owned event with decoded strings.
    pub(crate) fn decode(&self) -> Result<TokenOpen, DecodeError> {
        let syscall = match self.syscall {
            1 => OpenSyscall::Open,
            2 => OpenSyscall::Openat,
            3 => OpenSyscall::Openat2,
            other => return Err(DecodeError::Syscall(other)),
        };
        let path = decode_str(&self.path, self.path_len);
        let token_path = clean_token_path(&path).into_owned();

        Ok(TokenOpen {
            timestamp_boot_ns: self.timestamp_ns,
            cgroup_id: self.cgroup_id,
            tgid: self.tgid,
            tid: self.tid,
            ppid: self.ppid,
            uid: self.uid,
            gid: self.gid,
            mnt_ns_inum: self.mnt_ns_inum,
            start_boottime_ns: self.start_boottime_ns,
            parent_start_boottime_ns: self.parent_start_boottime_ns,
            syscall,
            fd: self.fd,
            flags: self.f_flags,
            f_mode: self.f_mode,
            comm: decode_c_str(&self.comm),
            parent_comm: decode_c_str(&self.parent_comm),
            path,
            token_path,
            path_truncated: self.truncated & TRUNCATED_PATH != 0,
            exe: decode_str(&self.exe, self.exe_len),
            exe_truncated: self.truncated & TRUNCATED_EXE != 0,
            parent_exe: decode_str(&self.parent_exe, self.parent_exe_len),
            parent_exe_truncated: self.truncated & TRUNCATED_PARENT_EXE != 0,
            args: decode_args(&self.args, self.args_len),
            args_truncated: self.truncated & TRUNCATED_ARGS != 0,
        })
    }
}

/// Decodes a ring buffer record.
pub(crate) fn decode_event(bytes: &[u8]) -> Result<TokenOpen, DecodeError> {
    RawEvent::from_bytes(bytes)?.decode()
}

/// Decodes the first `len` bytes of `buf`, stopping early at a NUL.
fn decode_str(buf: &[u8], len: u16) -> String {
    let len = usize::from(len).min(buf.len());
    decode_c_str(&buf[..len])
}

/// Decodes `buf` up to its first NUL, or whole when it has none.
fn decode_c_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Splits the NUL-separated command line. A cut last argument is kept as far as it goes.
fn decode_args(buf: &[u8], len: u16) -> Vec<String> {
    let len = usize::from(len).min(buf.len());
    let bytes = buf[..len].strip_suffix(&[0]).unwrap_or(&buf[..len]);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a record byte by byte at the C layout's offsets.
    fn record() -> Vec<u8> {
        let mut bytes = vec![0u8; EVENT_SIZE];
        let put = |bytes: &mut Vec<u8>, offset: usize, value: &[u8]| {
            bytes[offset..offset + value.len()].copy_from_slice(value);
        };
        put(&mut bytes, 0, &7u64.to_ne_bytes());
        put(&mut bytes, 32, &1234u32.to_ne_bytes());
        put(&mut bytes, 36, &1235u32.to_ne_bytes());
        put(&mut bytes, 40, &1u32.to_ne_bytes());
        put(&mut bytes, 56, &3i32.to_ne_bytes());
        let path =
            b"/var/run/secrets/eks.amazonaws.com/serviceaccount/..2026_12_04_09_00_00.1/token";
        put(&mut bytes, 68, &(path.len() as u16).to_ne_bytes());
        put(&mut bytes, 70, &3u16.to_ne_bytes());
        put(&mut bytes, 74, &10u16.to_ne_bytes());
        put(&mut bytes, 76, &[2, TRUNCATED_ARGS]);
        put(&mut bytes, 80, b"cat\0");
        put(&mut bytes, 112, path);
        put(&mut bytes, 624, b"cat\0stale");
        put(&mut bytes, 1136, b"cat\0token\0");
        bytes
    }

    #[test]
    fn decode_reads_c_offsets() {
        let event = decode_event(&record()).unwrap();
        assert_eq!(event.timestamp_boot_ns, 7);
        assert_eq!(event.tgid, 1234);
        assert_eq!(event.tid, 1235);
        assert_eq!(event.ppid, 1);
        assert_eq!(event.fd, 3);
        assert_eq!(event.syscall, OpenSyscall::Openat);
        assert_eq!(event.comm, "cat");
        assert_eq!(event.exe, "cat");
        assert_eq!(event.parent_exe, "");
        assert_eq!(event.args, ["cat", "token"]);
        assert!(event.args_truncated);
        assert!(!event.path_truncated);
        assert_eq!(
            event.token_path,
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
        );
    }

    #[test]
    fn decode_rejects_wrong_size() {
        assert_eq!(
            decode_event(&[0u8; 16]),
            Err(DecodeError::Size { actual: 16 })
        );
    }

    #[test]
    fn decode_rejects_unknown_syscall() {
        let mut bytes = record();
        bytes[76] = 9;
        assert_eq!(decode_event(&bytes), Err(DecodeError::Syscall(9)));
    }

    #[test]
    fn decode_str_is_lossy_and_bounded() {
        assert_eq!(decode_str(b"ab\xffc\0zz", 4), "ab\u{fffd}c");
        assert_eq!(decode_str(b"abc", 60), "abc");
        assert_eq!(decode_c_str(b"full-16-byte-nam"), "full-16-byte-nam");
    }

    #[test]
    fn decode_args_handles_cut_and_empty() {
        assert_eq!(decode_args(b"a\0bc\0", 5), ["a", "bc"]);
        assert_eq!(decode_args(b"a\0bc", 4), ["a", "bc"]);
        assert!(decode_args(b"\0\0", 0).is_empty());
    }
}

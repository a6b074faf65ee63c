//! Finds the container and pod of a process from its cgroup.
//!
//! The kubelet names pod cgroups after the pod uid, and the container runtime
//! names container cgroups after the container id, so the cgroup path alone
//! gives both without the Kubernetes API. Two cgroup drivers are common:
//!
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`,
//!   with `-` in the uid written as `_`, and no QoS slice for Guaranteed pods;
//!   CRI-O uses `crio-<id>.scope` and Docker `docker-<id>.scope`.
//! - cgroupfs: `/kubepods/burstable/pod<uid>/<id>` and `/kubepods/pod<uid>/<id>`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thiserror::Error;

/// Mount point of the cgroup v2 hierarchy on a pure v2 host, such as
/// Amazon Linux 2023 and Bottlerocket.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Finds the cgroup v2 mount in a `/proc/<pid>/mounts` listing.
///
/// A hybrid host (cgroup v1 controllers beside v2) mounts v2 at
/// `/sys/fs/cgroup/unified`, and the kernel's cgroup ids are v2 ids, so
/// the agent must walk that tree rather than the v1 one.
pub fn find_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let mount_point = fields.nth(1)?;
        (fields.next()? == "cgroup2").then(|| PathBuf::from(unescape_mount_path(mount_point)))
    })
}

/// Undoes the octal escapes (`\040` for a space) of paths in `/proc/mounts`.
fn unescape_mount_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        let octal = digits.filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Deepest directory level under the cgroup root that a scan visits. Kubernetes
/// container cgroups sit at level 4 with the systemd driver.
const MAX_SCAN_DEPTH: usize = 8;

/// Minimum time between two full scans of the cgroup tree.
const MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(500);

/// A container runtime, as named in cgroup paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
}

impl Runtime {
    /// Returns the runtime's name in the wire schema and in Kubernetes
    /// container ids (`containerd://`, `cri-o://`, `docker://`).
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
        }
    }
}

/// Container and pod details parsed from a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupInfo {
    /// The cgroup path, relative to the hierarchy root.
    pub path: String,
    /// Container runtime, when the path names it (the cgroupfs driver of
    /// containerd and Docker does not).
    pub runtime: Option<Runtime>,
    /// Container id, 64 lowercase hex digits.
    pub container_id: Option<String>,
    /// Pod uid, with dashes.
    pub pod_uid: Option<String>,
}

/// A failure to read cgroup information.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// `/proc/<pid>/cgroup` could not be read, usually because the process exited.
    #[error("failed to read {path}: {source}; the process may have exited")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Parses the contents of `/proc/<pid>/cgroup`.
///
/// Prefers the cgroup v2 line (`0::<path>`). On cgroup v1 hosts, takes the
/// first controller line whose path names a pod or container.
pub fn parse_proc_cgroup(contents: &str) -> CgroupInfo {
    let mut fallback: Option<CgroupInfo> = None;
    for line in contents.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let info = parse_cgroup_path(path);
        if hierarchy == "0" && controllers.is_empty() {
            if info.pod_uid.is_some() || info.container_id.is_some() {
                return info;
            }
            fallback.get_or_insert(info);
        } else if info.pod_uid.is_some() || info.container_id.is_some() {
            return info;
        } else if fallback.is_none() {
            fallback = Some(info);
        }
    }
    fallback.unwrap_or_default()
}

/// Parses one cgroup path into runtime, container id and pod uid.
///
/// Components before the pod are skipped, so paths seen from inside a cgroup
/// namespace (`/../../kubepods-...`) parse too. A container cgroup may have
/// children, as when systemd runs inside the container.
pub fn parse_cgroup_path(path: &str) -> CgroupInfo {
    let mut info = CgroupInfo {
        path: path.to_owned(),
        ..CgroupInfo::default()
    };
    for component in path.split('/') {
        if info.pod_uid.is_none()
            && let Some(uid) = pod_uid_of(component)
        {
            info.pod_uid = Some(uid);
            continue;
        }
        if info.container_id.is_none()
            && let Some((runtime, id)) = container_of(component, info.pod_uid.is_some())
        {
            info.runtime = runtime;
            info.container_id = Some(id);
        }
    }
    info
}

/// Extracts the pod uid from `kubepods-burstable-pod<uid>.slice` or `pod<uid>`.
fn pod_uid_of(component: &str) -> Option<String> {
    if let Some(slice) = component.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        if !slice.starts_with("kubepods") {
            return None;
        }
        let uid = uid.replace('_', "-");
        return crate::classify::is_pod_uid(&uid).then_some(uid);
    }
    let uid = component.strip_prefix("pod")?;
    crate::classify::is_pod_uid(uid).then(|| uid.to_owned())
}

/// Extracts the container from `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope`, `crio-<id>`, or a bare `<id>` below a pod cgroup.
fn container_of(component: &str, in_pod: bool) -> Option<(Option<Runtime>, String)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let prefixed = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
    ];
    for (prefix, runtime) in prefixed {
        if let Some(id) = name.strip_prefix(prefix) {
            // `crio-conmon-<id>` is CRI-O's monitor process, not the container.
            return is_container_id(id).then(|| (Some(runtime), id.to_owned()));
        }
    }
    (in_pod && is_container_id(name)).then(|| (None, name.to_owned()))
}

fn is_container_id(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads and parses `<proc>/<pid>/cgroup`.
pub fn read_proc_cgroup(proc_root: &Path, pid: u32) -> Result<CgroupInfo, CgroupError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    let contents =
        std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    Ok(parse_proc_cgroup(&contents))
}

/// Maps cgroup v2 ids (the inode numbers of cgroup directories) to paths, for
/// readers that exited before `/proc/<pid>/cgroup` could be read.
///
/// The map is rebuilt by a full scan of the hierarchy when an id is missing,
/// at most once per [`MIN_RESCAN_INTERVAL`].
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    state: Mutex<ResolverState>,
}

#[derive(Debug, Default)]
struct ResolverState {
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupResolver {
    /// Builds a resolver over the cgroup v2 hierarchy mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> CgroupResolver {
        CgroupResolver {
            root: root.into(),
            state: Mutex::new(ResolverState::default()),
        }
    }

    /// Returns the path of cgroup `id` relative to the root, such as
    /// `/kubepods.slice/...`, scanning the tree when the id is not cached.
    ///
    /// This does blocking file system work; call it from a blocking context.
    pub fn resolve(&self, id: u64) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = state.paths.get(&id) {
            return Some(path.clone());
        }
        let due = state
            .last_scan
            .is_none_or(|at| at.elapsed() >= MIN_RESCAN_INTERVAL);
        if !due {
            return None;
        }
        state.paths = scan_tree(&self.root);
        state.last_scan = Some(Instant::now());
        state.paths.get(&id).cloned()
    }

    /// Returns the cached path of cgroup `id`, without scanning.
    pub fn cached(&self, id: u64) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.paths.get(&id).cloned()
    }

    /// Records that cgroup `id` has `path`, as read from `/proc/<pid>/cgroup`.
    pub fn remember(&self, id: u64, path: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.paths.insert(id, path.to_owned());
    }

    /// Returns the inode number of the cgroup directory `path`, if it exists.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        let relative = path.trim_start_matches('/');
        std::fs::metadata(self.root.join(relative))
            .ok()
            .map(|m| m.ino())
    }
}

fn scan_tree(root: &Path) -> HashMap<u64, String> {
    let mut paths = HashMap::new();
    if let Ok(metadata) = std::fs::metadata(root) {
        paths.insert(metadata.ino(), "/".to_owned());
    }
    let mut pending = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, relative, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if !file_type.is_dir() {
                continue;
            }
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let child = format!("{relative}/{}", entry.file_name().to_string_lossy());
            paths.insert(metadata.ino(), child.clone());
            if depth + 1 < MAX_SCAN_DEPTH {
                pending.push((entry.path(), child, depth + 1));
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    #[test]
    fn cgroup2_mount_found_on_hybrid_host() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            find_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn cgroup2_mount_unescaped() {
        let mounts = "cgroup2 /host/sys\\040fs cgroup2 rw 0 0\n";
        assert_eq!(
            find_cgroup2_mount(mounts),
            Some(PathBuf::from("/host/sys fs"))
        );
        assert_eq!(find_cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    use super::*;

    const UID: &str = "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a";
    const UID_SYSTEMD: &str = "7c1d5a3e_2b4f_4e8a_9c6d_0f1e2d3c4b5a";
    const ID: &str = "3b0f5e4c9a7d2e1f8c6b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

    fn expect(line: &str, runtime: Option<Runtime>) {
        let info = parse_proc_cgroup(line);
        assert_eq!(info.pod_uid.as_deref(), Some(UID), "pod uid of {line}");
        assert_eq!(
            info.container_id.as_deref(),
            Some(ID),
            "container of {line}"
        );
        assert_eq!(info.runtime, runtime, "runtime of {line}");
    }

    #[test]
    fn systemd_driver_each_runtime_and_qos() {
        let runtimes = [
            ("cri-containerd", Runtime::Containerd),
            ("crio", Runtime::CriO),
            ("docker", Runtime::Docker),
        ];
        for (prefix, runtime) in runtimes {
            let lines = [
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/{prefix}-{ID}.scope"
                ),
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/{prefix}-{ID}.scope"
                ),
                format!("0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/{prefix}-{ID}.scope"),
            ];
            for line in lines {
                expect(&line, Some(runtime));
            }
        }
    }

    #[test]
    fn cgroupfs_driver_each_qos() {
        for line in [
            format!("0::/kubepods/burstable/pod{UID}/{ID}"),
            format!("0::/kubepods/besteffort/pod{UID}/{ID}"),
            format!("0::/kubepods/pod{UID}/{ID}"),
        ] {
            expect(&line, None);
        }
        expect(
            &format!("0::/kubepods/burstable/pod{UID}/crio-{ID}"),
            Some(Runtime::CriO),
        );
    }

    #[test]
    fn cgroup_v1_lines() {
        let contents = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             11:hugetlb:/kubepods/burstable/pod{UID}/{ID}\n\
             4:memory:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n\
             0::/\n"
        );
        expect(&contents, None);

        let systemd = format!(
            "10:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n\
             1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
        );
        expect(&systemd, Some(Runtime::Containerd));
    }

    #[test]
    fn namespaced_and_nested_paths() {
        expect(
            &format!(
                "0::/../../kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            ),
            Some(Runtime::Containerd),
        );
        expect(
            &format!(
                "0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope/init.scope"
            ),
            Some(Runtime::Containerd),
        );
    }

    #[test]
    fn crio_conmon_is_not_container() {
        let info = parse_proc_cgroup(&format!(
            "0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id, None);
    }

    #[test]
    fn pod_cgroup_without_container() {
        let info = parse_proc_cgroup(&format!("0::/kubepods/burstable/pod{UID}"));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id, None);
    }

    #[test]
    fn docker_outside_kubernetes() {
        let info = parse_proc_cgroup(&format!("0::/system.slice/docker-{ID}.scope"));
        assert_eq!(info.pod_uid, None);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime, Some(Runtime::Docker));
    }

    #[test]
    fn host_cgroups_have_no_container() {
        for line in [
            "0::/system.slice/kubelet.service",
            "0::/system.slice/containerd.service",
            "0::/user.slice/user-1000.slice/session-3.scope",
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-5f1c.scope",
            "0::/",
            "0::/init.scope",
            "",
        ] {
            let info = parse_proc_cgroup(line);
            assert_eq!(info.pod_uid, None, "{line}");
            assert_eq!(info.container_id, None, "{line}");
        }
        let bare_id = parse_proc_cgroup(&format!("0::/system.slice/{ID}"));
        assert_eq!(
            bare_id.container_id, None,
            "a bare id outside a pod is not a container"
        );
    }

    #[test]
    fn v2_path_kept() {
        let info = parse_proc_cgroup("0::/system.slice/kubelet.service\n");
        assert_eq!(info.path, "/system.slice/kubelet.service");
    }

    #[test]
    fn resolver_finds_ids_by_inode() {
        let root = tempfile::tempdir().unwrap();
        let relative = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        std::fs::create_dir_all(root.path().join(&relative)).unwrap();
        let id = std::fs::metadata(root.path().join(&relative))
            .unwrap()
            .ino();

        let resolver = CgroupResolver::new(root.path());
        let path = resolver
            .resolve(id)
            .expect("scan finds the container cgroup");
        assert_eq!(path, format!("/{relative}"));
        assert_eq!(parse_cgroup_path(&path).container_id.as_deref(), Some(ID));
        assert_eq!(resolver.id_of(&path), Some(id));
    }

    #[test]
    fn resolver_rescans_for_new_cgroups() {
        let root = tempfile::tempdir().unwrap();
        let resolver = CgroupResolver::new(root.path());
        assert_eq!(resolver.resolve(1), None);

        let dir = root.path().join("kubepods").join(format!("pod{UID}"));
        std::fs::create_dir_all(&dir).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        std::thread::sleep(MIN_RESCAN_INTERVAL);
        assert_eq!(resolver.resolve(id), Some(format!("/kubepods/pod{UID}")));
    }

    #[test]
    fn resolver_remembers_paths() {
        let resolver = CgroupResolver::new("/nonexistent-cgroup-root");
        resolver.remember(42, "/kubepods/x");
        assert_eq!(resolver.resolve(42).as_deref(), Some("/kubepods/x"));
    }
}

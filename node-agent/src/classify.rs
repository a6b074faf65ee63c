//! Tells from the path of an opened file whether it is an AWS web-identity
//! token, of which kind, and whose.
//!
//! Three layouts are tokens:
//! - the IRSA mount inside a pod, `/var/run/secrets/eks.amazonaws.com/serviceaccount/token`,
//!   which the EKS pod identity webhook adds as projected volume `aws-iam-token`;
//! - the EKS Pod Identity mount inside a pod,
//!   `/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token`,
//!   from projected volume `eks-pod-identity-token`;
//! - the kubelet's copy of either volume on the host,
//!   `<kubelet root>/pods/<pod uid>/volumes/kubernetes.io~projected/<volume>/<file>`.
//!
//! `/run/secrets/...` is accepted for the in-pod paths because `/var/run` is a
//! symlink to `/run` in most images, and the kernel reports resolved paths.

use std::path::{Path, PathBuf};

use tokenguard_schema::TokenKind;

const IRSA_DIR: &str = "secrets/eks.amazonaws.com/serviceaccount";
const IRSA_FILE: &str = "token";
const IRSA_VOLUME: &str = "aws-iam-token";
const POD_IDENTITY_DIR: &str = "secrets/pods.eks.amazonaws.com/serviceaccount";
const POD_IDENTITY_FILE: &str = "eks-pod-identity-token";
const POD_IDENTITY_VOLUME: &str = "eks-pod-identity-token";
const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";

/// Default `--root-dir` of the kubelet.
pub const DEFAULT_KUBELET_ROOT: &str = "/var/lib/kubelet";

/// A token file, as classified from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLocation {
    pub kind: TokenKind,
    /// The path with `.`, `..`, `..data` and the kubelet's timestamped
    /// directories removed.
    pub path: String,
    /// Whether this is the kubelet's copy on the host.
    pub host_path: bool,
    /// Uid of the pod the token belongs to, known from host paths only.
    pub token_pod_uid: Option<String>,
}

/// Classifies token paths, knowing where the kubelet keeps pod volumes.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Kubelet root directories without a trailing slash: the configured one
    /// and, when it differs, its canonical form, since the kernel reports
    /// paths with symlinks resolved.
    kubelet_roots: Vec<String>,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(Path::new(DEFAULT_KUBELET_ROOT))
    }
}

impl Classifier {
    /// Builds a classifier for the kubelet root `kubelet_root`.
    pub fn new(kubelet_root: &Path) -> Classifier {
        let mut kubelet_roots = vec![clean_path(&kubelet_root.to_string_lossy())];
        if let Ok(canonical) = std::fs::canonicalize(kubelet_root) {
            let canonical = clean_path(&canonical.to_string_lossy());
            if !kubelet_roots.contains(&canonical) {
                kubelet_roots.push(canonical);
            }
        }
        Classifier { kubelet_roots }
    }

    /// Builds a classifier for exactly these roots, without resolving symlinks.
    pub fn with_roots(roots: &[PathBuf]) -> Classifier {
        Classifier {
            kubelet_roots: roots
                .iter()
                .map(|root| clean_path(&root.to_string_lossy()))
                .collect(),
        }
    }

    /// Classifies `path`, or returns `None` when it is not an AWS token file.
    pub fn classify(&self, path: &str) -> Option<TokenLocation> {
        let path = clean_path(path);
        if let Some(kind) = in_pod_kind(&path) {
            return Some(TokenLocation {
                kind,
                path,
                host_path: false,
                token_pod_uid: None,
            });
        }
        // NOTE: a container that mounts the kubelet directory at another path,
        // such as /host/var/lib/kubelet, is not matched here. The kernel still
        // submits such opens, so they are dropped only by this check.
        for root in &self.kubelet_roots {
            let Some(rest) = path.strip_prefix(root.as_str()) else {
                continue;
            };
            if let Some((kind, uid)) = kubelet_kind(rest) {
                return Some(TokenLocation {
                    kind,
                    token_pod_uid: Some(uid.to_owned()),
                    path,
                    host_path: true,
                });
            }
        }
        None
    }
}

fn in_pod_kind(path: &str) -> Option<TokenKind> {
    let rest = path
        .strip_prefix("/var/run/")
        .or_else(|| path.strip_prefix("/run/"))?;
    let (dir, file) = rest.rsplit_once('/')?;
    match (dir, file) {
        (IRSA_DIR, IRSA_FILE) => Some(TokenKind::Irsa),
        (POD_IDENTITY_DIR, POD_IDENTITY_FILE) => Some(TokenKind::PodIdentity),
        _ => None,
    }
}

/// Matches `/pods/<uid>/volumes/kubernetes.io~projected/<volume>/<file>`.
fn kubelet_kind(rest: &str) -> Option<(TokenKind, &str)> {
    let mut parts = rest.strip_prefix('/')?.split('/');
    let mut next = || parts.next();
    let (pods, uid, volumes, plugin, volume, file) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    if next().is_some() || pods != "pods" || volumes != "volumes" || plugin != PROJECTED_PLUGIN {
        return None;
    }
    if !is_pod_uid(uid) {
        return None;
    }
    match (volume, file) {
        (IRSA_VOLUME, IRSA_FILE) => Some((TokenKind::Irsa, uid)),
        (POD_IDENTITY_VOLUME, POD_IDENTITY_FILE) => Some((TokenKind::PodIdentity, uid)),
        _ => None,
    }
}

/// Returns whether `value` looks like a pod uid: a UUID, or the 32 hex digits the
/// kubelet gives static pods.
pub fn is_pod_uid(value: &str) -> bool {
    (value.len() == 36 || value.len() == 32)
        && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Normalizes an absolute path: drops empty and `.` components, applies `..`,
/// and removes the kubelet's `..data` link and `..<timestamp>` directories,
/// which the atomic writer of projected volumes puts between the volume and
/// the file.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ if is_kubelet_data_dir(part) => {}
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Returns whether a component is `..data` or a timestamped directory such as
/// `..2026_12_04_09_15_02.1234567890`.
fn is_kubelet_data_dir(part: &str) -> bool {
    let Some(name) = part.strip_prefix("..") else {
        return false;
    };
    name == "data"
        || (!name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'_' || b == b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "7c1d5a3e-2b4f-4e8a-9c6d-0f1e2d3c4b5a";

    fn classifier() -> Classifier {
        Classifier::with_roots(&[PathBuf::from("/var/lib/kubelet")])
    }

    #[test]
    fn irsa_in_pod() {
        for path in [
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            "/run/secrets/eks.amazonaws.com/serviceaccount/token",
        ] {
            let location = classifier().classify(path).expect(path);
            assert_eq!(location.kind, TokenKind::Irsa, "{path}");
            assert!(!location.host_path, "{path}");
            assert_eq!(location.path, path);
            assert_eq!(location.token_pod_uid, None);
        }
    }

    #[test]
    fn pod_identity_in_pod() {
        for path in [
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            "/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
        ] {
            let location = classifier().classify(path).expect(path);
            assert_eq!(location.kind, TokenKind::PodIdentity, "{path}");
            assert!(!location.host_path, "{path}");
        }
    }

    #[test]
    fn timestamped_dir_removed() {
        let raw =
            "/run/secrets/eks.amazonaws.com/serviceaccount/..2026_12_04_09_15_02.3416781092/token";
        let location = classifier().classify(raw).unwrap();
        assert_eq!(
            location.path,
            "/run/secrets/eks.amazonaws.com/serviceaccount/token"
        );
    }

    #[test]
    fn data_link_removed() {
        let raw =
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/..data/eks-pod-identity-token";
        let location = classifier().classify(raw).unwrap();
        assert_eq!(
            location.path,
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
        );
        assert_eq!(location.kind, TokenKind::PodIdentity);
    }

    #[test]
    fn irsa_kubelet_host_path() {
        let raw = format!(
            "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/aws-iam-token/..2026_12_04_09_15_02.3416781092/token"
        );
        let location = classifier().classify(&raw).unwrap();
        assert_eq!(location.kind, TokenKind::Irsa);
        assert!(location.host_path);
        assert_eq!(location.token_pod_uid.as_deref(), Some(UID));
        assert_eq!(
            location.path,
            format!(
                "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/aws-iam-token/token"
            )
        );
    }

    #[test]
    fn pod_identity_kubelet_host_path() {
        let raw = format!(
            "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/eks-pod-identity-token/eks-pod-identity-token"
        );
        let location = classifier().classify(&raw).unwrap();
        assert_eq!(location.kind, TokenKind::PodIdentity);
        assert!(location.host_path);
        assert_eq!(location.token_pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn static_pod_uid_accepted() {
        let uid = "0d3f0a5e6b8c4f1e9a2b7c6d5e4f3a2b";
        let raw = format!(
            "/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~projected/aws-iam-token/token"
        );
        let location = classifier().classify(&raw).unwrap();
        assert_eq!(location.token_pod_uid.as_deref(), Some(uid));
    }

    #[test]
    fn custom_kubelet_root() {
        let classifier = Classifier::with_roots(&[PathBuf::from("/data/kubelet/")]);
        let raw =
            format!("/data/kubelet/pods/{UID}/volumes/kubernetes.io~projected/aws-iam-token/token");
        let location = classifier.classify(&raw).unwrap();
        assert!(location.host_path);
        let default_root = format!(
            "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/aws-iam-token/token"
        );
        assert_eq!(classifier.classify(&default_root), None);
    }

    #[test]
    fn symlinked_kubelet_root_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-kubelet");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("kubelet");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let classifier = Classifier::new(&link);
        let raw = format!(
            "{}/pods/{UID}/volumes/kubernetes.io~projected/aws-iam-token/token",
            real.canonicalize().unwrap().display()
        );
        assert!(classifier.classify(&raw).is_some());
    }

    #[test]
    fn kubernetes_default_token_rejected() {
        for path in [
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/run/secrets/kubernetes.io/serviceaccount/..data/token",
            &format!(
                "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/kube-api-access-7xk2p/token"
            ),
        ] {
            assert_eq!(classifier().classify(path), None, "{path}");
        }
    }

    #[test]
    fn other_paths_rejected() {
        for path in [
            "/etc/passwd",
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token.bak",
            "/var/run/secrets/eks.amazonaws.com/serviceaccount",
            "/tmp/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/sub/token",
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/token",
            "/host/var/lib/kubelet/pods/x/volumes/kubernetes.io~projected/aws-iam-token/token",
            "/var/lib/kubelet/pods/not-a-uid/volumes/kubernetes.io~projected/aws-iam-token/token",
            &format!(
                "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~secret/aws-iam-token/token"
            ),
            &format!(
                "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/aws-iam-token/eks-pod-identity-token"
            ),
            &format!(
                "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/aws-iam-token/token/x"
            ),
        ] {
            assert_eq!(classifier().classify(path), None, "{path}");
        }
    }

    #[test]
    fn clean_path_normalizes() {
        assert_eq!(clean_path("/a//b/./c/"), "/a/b/c");
        assert_eq!(clean_path("/a/b/../c"), "/a/c");
        assert_eq!(clean_path("/a/..data/..2026_01_02_03_04_05.12/t"), "/a/t");
        assert_eq!(clean_path("/a/..hidden/t"), "/a/..hidden/t");
        assert_eq!(clean_path("/"), "/");
    }
}

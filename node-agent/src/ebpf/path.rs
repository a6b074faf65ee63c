//! Cleaning of token paths reported by the kernel.

use std::borrow::Cow;

/// Removes the kubelet's atomic-writer directory from a token path.
///
/// The kubelet writes projected volume files into a directory named
/// `..<UTC time as YYYY_MM_DD_HH_MM_SS>.<digits>` and points `..data` at it, and `token` is a
/// symlink to `..data/token`. The kernel reports the path after symlinks, so an open of
/// `serviceaccount/token` arrives as `serviceaccount/..2026_12_04_09_00_00.123456789/token`.
/// This returns the path the pod uses, `serviceaccount/token`. Only the file's parent directory
/// is removed, and only when it is such a timestamped directory or `..data`. Other paths are
/// returned unchanged.
pub fn clean_token_path(path: &str) -> Cow<'_, str> {
    let Some((dir, file)) = path.rsplit_once('/') else {
        return Cow::Borrowed(path);
    };
    let Some((grandparent, parent)) = dir.rsplit_once('/') else {
        return Cow::Borrowed(path);
    };
    if parent == "..data" || is_atomic_writer_dir(parent) {
        Cow::Owned(format!("{grandparent}/{file}"))
    } else {
        Cow::Borrowed(path)
    }
}

/// Returns true for names like `..2026_12_04_09_00_00.123456789`.
fn is_atomic_writer_dir(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((time, suffix)) = rest.split_once('.') else {
        return false;
    };

    // YYYY_MM_DD_HH_MM_SS: digit groups of these widths joined by underscores.
    let widths = [4, 2, 2, 2, 2, 2];
    let groups: Vec<&str> = time.split('_').collect();
    let time_ok = groups.len() == widths.len()
        && groups
            .iter()
            .zip(widths)
            .all(|(group, width)| group.len() == width && is_digits(group));
    time_ok && is_digits(suffix)
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_timestamp_dir() {
        assert_eq!(
            clean_token_path(
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/..2026_12_04_09_00_00.123456789/token"
            ),
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
        );
    }

    #[test]
    fn clean_strips_data_dir() {
        assert_eq!(
            clean_token_path(
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/..data/eks-pod-identity-token"
            ),
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
        );
    }

    #[test]
    fn clean_strips_kubelet_host_path() {
        let uid = "0b6b6f3e-6c4f-4f7e-9d1a-3f7d2f9f1c11";
        assert_eq!(
            clean_token_path(&format!(
                "/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~projected/aws-iam-token/..2026_01_02_03_04_05.1/token"
            )),
            format!(
                "/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~projected/aws-iam-token/token"
            )
        );
    }

    #[test]
    fn clean_keeps_plain_paths() {
        for path in [
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            "token",
            "/token",
            "",
        ] {
            assert!(
                matches!(clean_token_path(path), Cow::Borrowed(p) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn clean_keeps_lookalike_dirs() {
        for path in [
            "/a/..2026_12_04_09_00_00/token",
            "/a/..2026_12_04_09_00_00.12x/token",
            "/a/..2026_12_04_09_00.1/token",
            "/a/..20261_12_04_09_00_00.1/token",
            "/a/...data/token",
            "/a/..2026_12_04_09_00_00.1/b/token",
        ] {
            assert_eq!(clean_token_path(path), path);
        }
    }

    #[test]
    fn clean_strips_only_one_dir() {
        assert_eq!(
            clean_token_path("/a/..data/..2026_12_04_09_00_00.1/token"),
            "/a/..data/token"
        );
    }
}

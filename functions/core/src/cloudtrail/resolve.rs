//! Which configured cluster a record names.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{ClusterRef, issuer_key};
use crate::store::StoreError;

/// How often an unknown issuer may make the resolver ask again, so a flood of
/// records from a cluster nobody configured costs one lookup a minute.
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Finds the OIDC issuer URL of an EKS cluster.
pub trait IssuerLookup: Send + Sync {
    /// Returns the issuer URL of `cluster`, or `None` when no such cluster
    /// exists.
    fn issuer(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}

/// Issuers given up front, as replay's `--cluster NAME=ISSUER_URL` does.
#[derive(Debug, Clone, Default)]
pub struct StaticIssuers(pub HashMap<String, String>);

impl IssuerLookup for StaticIssuers {
    async fn issuer(&self, cluster: &str) -> Result<Option<String>, StoreError> {
        Ok(self.0.get(cluster).cloned())
    }
}

/// Maps the cluster a record names, by name or by OIDC issuer, to one of the
/// configured clusters. Issuers are looked up once and cached; an unknown
/// issuer looks all clusters up again at most once a minute, which picks up
/// a cluster recreated with a new issuer.
#[derive(Debug)]
pub struct ClusterResolver<L> {
    clusters: Vec<String>,
    lookup: L,
    state: Mutex<ResolverState>,
}

#[derive(Debug, Default)]
struct ResolverState {
    /// Cluster name by issuer key.
    issuers: HashMap<String, String>,
    refreshed_at: Option<Instant>,
}

impl<L: IssuerLookup> ClusterResolver<L> {
    pub fn new(clusters: Vec<String>, lookup: L) -> ClusterResolver<L> {
        ClusterResolver {
            clusters,
            lookup,
            state: Mutex::new(ResolverState::default()),
        }
    }

    pub fn clusters(&self) -> &[String] {
        &self.clusters
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ResolverState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the configured cluster a record names, or `None` when it names
    /// another cluster.
    pub async fn resolve(&self, cluster: &ClusterRef) -> Result<Option<String>, StoreError> {
        let issuer = match cluster {
            ClusterRef::Name(name) => {
                return Ok(self.clusters.iter().find(|known| *known == name).cloned());
            }
            ClusterRef::Issuer(issuer) => issuer_key(issuer),
        };
        let due = {
            let state = self.state();
            if let Some(name) = state.issuers.get(&issuer) {
                return Ok(Some(name.clone()));
            }
            state
                .refreshed_at
                .is_none_or(|at| at.elapsed() >= REFRESH_INTERVAL)
        };
        if !due {
            debug!(issuer, "issuer of no configured cluster");
            return Ok(None);
        }
        self.refresh().await?;
        Ok(self.state().issuers.get(&issuer).cloned())
    }

    /// Looks up the issuer of every configured cluster. A cluster that does
    /// not exist is logged and skipped; any other failure fails the refresh,
    /// so the record is retried.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut issuers = HashMap::new();
        for cluster in &self.clusters {
            match self.lookup.issuer(cluster).await? {
                Some(issuer) => {
                    let key = issuer_key(&issuer);
                    if let Some(first) = issuers.get(&key) {
                        // EKS gives each cluster its own issuer, so this is a
                        // stand-in or a misconfiguration: keep the first.
                        warn!(
                            cluster, other = %first, issuer,
                            "two clusters report one OIDC issuer; records of it go to the first"
                        );
                        continue;
                    }
                    issuers.insert(key, cluster.clone());
                }
                None => warn!(
                    cluster,
                    "configured cluster not found: check its name and the region"
                ),
            }
        }
        info!(clusters = issuers.len(), "cluster issuers looked up");
        let mut state = self.state();
        state.issuers = issuers;
        state.refreshed_at = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Counting {
        calls: AtomicUsize,
    }

    impl IssuerLookup for Counting {
        async fn issuer(&self, cluster: &str) -> Result<Option<String>, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok((cluster == "prod")
                .then(|| "https://oidc.eks.eu-west-1.amazonaws.com/id/AAAA1111".to_owned()))
        }
    }

    #[tokio::test]
    async fn issuers_cached() {
        let resolver = ClusterResolver::new(
            vec!["prod".to_owned(), "gone".to_owned()],
            Counting::default(),
        );
        let prod =
            ClusterRef::Issuer("https://oidc.eks.eu-west-1.amazonaws.com/id/AAAA1111".into());
        assert_eq!(
            resolver.resolve(&prod).await.unwrap().as_deref(),
            Some("prod")
        );
        assert_eq!(
            resolver.resolve(&prod).await.unwrap().as_deref(),
            Some("prod")
        );
        assert_eq!(
            resolver.lookup.calls.load(Ordering::SeqCst),
            2,
            "one refresh"
        );

        let other =
            ClusterRef::Issuer("https://oidc.eks.eu-west-1.amazonaws.com/id/BBBB2222".into());
        assert_eq!(resolver.resolve(&other).await.unwrap(), None);
        assert_eq!(
            resolver.lookup.calls.load(Ordering::SeqCst),
            2,
            "an unknown issuer waits for the refresh interval"
        );
    }

    #[tokio::test]
    async fn names_checked() {
        let resolver = ClusterResolver::new(vec!["prod".to_owned()], StaticIssuers::default());
        let prod = ClusterRef::Name("prod".to_owned());
        assert_eq!(
            resolver.resolve(&prod).await.unwrap().as_deref(),
            Some("prod")
        );
        let other = ClusterRef::Name("staging".to_owned());
        assert_eq!(resolver.resolve(&other).await.unwrap(), None);
    }
}

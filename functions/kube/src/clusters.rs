//! One kube client per cluster, trusting only that cluster's CA and
//! carrying a fresh EKS token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use secrecy::SecretString;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, info};

use crate::endpoint::{ClusterEndpoint, ClusterSource};
use crate::error::SetupError;
use crate::token::EksTokens;

/// Time allowed to open a TCP connection and finish the TLS handshake. The
/// detector Lambda has 30 seconds for the whole request, and containment
/// makes up to five API calls.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for a response once the request is sent.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed to send a request.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client and when its token must be replaced.
#[derive(Clone)]
struct CachedClient {
    client: kube::Client,
    refresh_at: SystemTime,
}

/// Cached endpoint and client of one cluster. The endpoint outlives clients,
/// which are rebuilt with each new token.
#[derive(Default)]
struct Slot {
    endpoint: Option<ClusterEndpoint>,
    client: Option<CachedClient>,
}

/// Kubernetes API access to EKS clusters by name: endpoints from a
/// [`ClusterSource`], tokens from [`EksTokens`], one client per cluster.
///
/// Each client trusts only its cluster's CA. A client is rebuilt with a new
/// token when the old one reaches its refresh time or the API server returns
/// 401. The cluster's endpoint is looked up again after a call fails without
/// an HTTP response.
pub struct EksClusters {
    source: ClusterSource,
    tokens: EksTokens,
    slots: Mutex<HashMap<String, Arc<AsyncMutex<Slot>>>>,
    clock: fn() -> SystemTime,
}

impl std::fmt::Debug for EksClusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EksClusters")
            .field("source", &self.source)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl EksClusters {
    /// Reaches clusters found through `source` with tokens from `tokens`.
    pub fn new(source: ClusterSource, tokens: EksTokens) -> EksClusters {
        EksClusters {
            source,
            tokens,
            slots: Mutex::new(HashMap::new()),
            clock: SystemTime::now,
        }
    }

    /// Reaches the EKS clusters of `config`'s region, found with
    /// `DescribeCluster`, with tokens signed by `config`'s credentials.
    pub fn from_sdk_config(config: &SdkConfig) -> Result<EksClusters, SetupError> {
        let region = config.region().ok_or(SetupError::NoRegion)?;
        let provider = config
            .credentials_provider()
            .ok_or(SetupError::NoCredentials)?;
        let tokens = EksTokens::new(provider, region.as_ref());
        let source = ClusterSource::Eks(aws_sdk_eks::Client::new(config));
        Ok(EksClusters::new(source, tokens))
    }

    /// Replaces the clock that decides when tokens are replaced, so tests
    /// can move time forward.
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> EksClusters {
        self.clock = clock;
        self
    }

    fn slot(&self, cluster: &str) -> Arc<AsyncMutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(cluster.to_owned()).or_default().clone()
    }

    /// Returns the client for `cluster`, looking up its endpoint and signing
    /// a token as needed.
    pub async fn client(&self, cluster: &str) -> Result<kube::Client, SetupError> {
        let slot = self.slot(cluster);
        let mut slot = slot.lock().await;
        let now = (self.clock)();
        if let Some(cached) = &slot.client
            && now < cached.refresh_at
        {
            return Ok(cached.client.clone());
        }

        let endpoint = match &slot.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => {
                let endpoint = self.source.endpoint(cluster).await?;
                info!(cluster, url = %endpoint.url(), "found the cluster's API endpoint");
                slot.endpoint = Some(endpoint.clone());
                endpoint
            }
        };
        let token = self
            .tokens
            .token(cluster, now)
            .await
            .map_err(|source| SetupError::Token {
                cluster: cluster.to_owned(),
                source,
            })?;
        let client = build_client(cluster, &endpoint, SecretString::from(token.secret()))?;
        debug!(cluster, "signed a new EKS token");
        slot.client = Some(CachedClient {
            client: client.clone(),
            refresh_at: token.refresh_at,
        });
        Ok(client)
    }

    /// Drops what is cached for `cluster`, so the next call looks up its
    /// endpoint again.
    pub async fn forget(&self, cluster: &str) {
        let slot = self.slot(cluster);
        *slot.lock().await = Slot::default();
    }

    /// Drops the client of `cluster`, so the next call signs a new token.
    pub(crate) async fn forget_client(&self, cluster: &str) {
        let slot = self.slot(cluster);
        slot.lock().await.client = None;
    }
}

/// Builds a client for `endpoint` that trusts only its CA certificates and
/// sends `token` as the bearer token.
fn build_client(
    cluster: &str,
    endpoint: &ClusterEndpoint,
    token: SecretString,
) -> Result<kube::Client, SetupError> {
    let mut config = kube::Config::new(endpoint.url().clone());
    config.root_cert = Some(endpoint.ca_certificates().to_vec());
    config.accept_invalid_certs = false;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    config.write_timeout = Some(WRITE_TIMEOUT);
    config.auth_info.token = Some(token);
    kube::Client::try_from(config).map_err(|source| SetupError::Client {
        cluster: cluster.to_owned(),
        source,
    })
}

//! The agent's main loop: event source, pipeline and sink.

use std::sync::Arc;

use aws_credential_types::provider::SharedCredentialsProvider;
use futures::{Stream, StreamExt};
use thiserror::Error;
use tracing::info;

use crate::cli::{Config, Output};
use crate::metrics::{self, Metrics, MetricsError};
use crate::pipeline::{EnrichConfig, Enricher, NodeContext};
use crate::pods::PodIndex;
use crate::procfs::{ProcError, clock_ticks_per_second, read_boot_id};
use crate::sink::{
    EmbeddedSink, HttpSink, HttpSinkConfig, SharedWriter, Sink, StdoutSink, stdout_writer,
};
use crate::store::{EmbeddedStore, EmbeddedStoreError};

/// Records enriched at the same time. Enrichment mostly waits on the pod
/// index, so this bounds how many reads of just-started pods can wait at once.
const PIPELINE_CONCURRENCY: usize = 64;

/// A failure to start the agent.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The boot id, which prefixes event ids, could not be read.
    #[error("failed to read the boot id: {0}")]
    BootId(#[source] ProcError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Store(#[from] EmbeddedStoreError),
    #[error(transparent)]
    Http(#[from] crate::sink::http::HttpSinkError),
    /// The AWS configuration has no credential provider.
    #[error("no AWS credential provider is configured; the default chain found none")]
    NoCredentials,
}

/// A change to the HTTP sink's settings, applied before it starts.
type HttpTuning = Box<dyn FnOnce(&mut HttpSinkConfig) + Send>;

/// One agent run, with hooks for the event source's own counters.
pub struct Agent {
    config: Config,
    metrics: Arc<Metrics>,
    writer: SharedWriter,
    credentials: Option<SharedCredentialsProvider>,
    tune_http: Option<HttpTuning>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Prepares a run with `config`, writing JSON lines to stdout.
    pub fn new(config: Config) -> Agent {
        Agent {
            config,
            metrics: Arc::new(Metrics::default()),
            writer: stdout_writer(),
            credentials: None,
            tune_http: None,
        }
    }

    /// Returns the run's counters. Plug the kernel's counters in with
    /// [`Metrics::set_kernel_lost_source`] and [`Metrics::set_kernel_repeats_source`].
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Writes events (stdout sink) and findings (embedded mode) to `writer`.
    pub fn with_writer(mut self, writer: SharedWriter) -> Agent {
        self.writer = writer;
        self
    }

    /// Signs with `provider` instead of the AWS default credential chain.
    pub fn with_credentials(mut self, provider: SharedCredentialsProvider) -> Agent {
        self.credentials = Some(provider);
        self
    }

    /// Adjusts the HTTP sink's limits and timings before it starts.
    pub fn with_http_settings(
        mut self,
        tune: impl FnOnce(&mut HttpSinkConfig) + Send + 'static,
    ) -> Agent {
        self.tune_http = Some(Box::new(tune));
        self
    }

    /// Runs until `source` ends, then delivers what is queued and returns.
    pub async fn run<S>(mut self, source: S) -> Result<(), AgentError>
    where
        S: Stream<Item = crate::record::OpenRecord> + Send,
    {
        let tune_http = self.tune_http.take();
        let config = &self.config;
        let boot_id = read_boot_id(&config.proc_root).map_err(AgentError::BootId)?;
        let context = NodeContext {
            cluster: config.cluster.clone(),
            node_name: config.node_name.clone(),
            boot_id,
            hook: config.hook.clone(),
        };

        let metrics_task = match config.metrics_addr {
            Some(addr) => Some(metrics::serve(self.metrics.clone(), addr).await?),
            None => None,
        };
        let (pods, watch_task) = match &config.kube {
            Some(access) => {
                let (index, task) = PodIndex::spawn(access.clone(), &config.node_name);
                (index, Some(task))
            }
            None => (PodIndex::disabled(), None),
        };
        let sink = self.build_sink(&context, tune_http).await?;

        let enrich_config = EnrichConfig {
            kubelet_root: config.kubelet_root.clone(),
            proc_root: config.proc_root.clone(),
            cgroup_root: config.cgroup_root.clone(),
            pod_lookup_wait: config.pod_lookup_wait,
            ticks_per_second: clock_ticks_per_second(),
        };
        let enricher = Arc::new(Enricher::new(
            context.clone(),
            &enrich_config,
            pods,
            self.metrics.clone(),
        ));
        info!(
            cluster = %context.cluster, node = %context.node_name, boot_id = %context.boot_id,
            sink = sink_name(&config.output), kube = config.kube.is_some(),
            kill_orders = %config.kill_orders, "agent started"
        );

        let mut events = std::pin::pin!(
            source
                .map(|record| {
                    let enricher = enricher.clone();
                    async move { enricher.enrich(record).await }
                })
                .buffered(PIPELINE_CONCURRENCY)
        );
        while let Some(event) = events.next().await {
            if let Some(read) = event {
                sink.submit(read).await;
            }
        }

        sink.close().await;
        if let Some(task) = watch_task {
            task.abort();
        }
        if let Some(task) = metrics_task {
            task.abort();
        }
        info!(
            events = Metrics::get(&self.metrics.events_built),
            "event source ended; agent stopped"
        );
        Ok(())
    }

    async fn build_sink(
        &self,
        context: &NodeContext,
        tune_http: Option<HttpTuning>,
    ) -> Result<Sink, AgentError> {
        match &self.config.output {
            Output::Stdout => Ok(Sink::Stdout(StdoutSink::new(self.writer.clone()))),
            Output::Embedded { state_dir } => {
                let store = EmbeddedStore::open(state_dir)?;
                info!(path = %store.path().display(), "embedded baseline opened");
                Ok(Sink::Embedded(Box::new(EmbeddedSink::new(
                    store,
                    self.config.policy.clone(),
                    self.writer.clone(),
                    context.node(),
                    self.metrics.clone(),
                ))))
            }
            Output::Http { url, region } => {
                let credentials = match &self.credentials {
                    Some(provider) => provider.clone(),
                    None => aws_config::defaults(aws_config::BehaviorVersion::latest())
                        .region(aws_config::Region::new(region.clone()))
                        .load()
                        .await
                        .credentials_provider()
                        .ok_or(AgentError::NoCredentials)?,
                };
                let mut settings =
                    HttpSinkConfig::new(url.clone(), region.clone(), context.node(), credentials);
                settings.kill_orders = self.config.kill_orders;
                settings.proc_root = self.config.proc_root.clone();
                if let Some(tune) = tune_http {
                    tune(&mut settings);
                }
                Ok(Sink::Http(HttpSink::start(settings, self.metrics.clone())?))
            }
        }
    }
}

fn sink_name(output: &Output) -> &'static str {
    match output {
        Output::Stdout => "stdout",
        Output::Http { .. } => "http",
        Output::Embedded { .. } => "embedded",
    }
}

/// Runs the agent with `config` until `source` ends.
pub async fn run<S>(config: Config, source: S) -> Result<(), AgentError>
where
    S: Stream<Item = crate::record::OpenRecord> + Send,
{
    Agent::new(config).run(source).await
}

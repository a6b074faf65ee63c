//! Command-line flags and the agent settings built from them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use reqwest::Url;
use thiserror::Error;
use tokenguard_core::{Policy, parse_duration};

use crate::cgroup::{DEFAULT_CGROUP_ROOT, find_cgroup2_mount};
use crate::classify::DEFAULT_KUBELET_ROOT;
use crate::kill::KillOrders;
use crate::pods::KubeAccess;
use crate::procfs::DEFAULT_PROC_ROOT;
use crate::record::{MAX_NAME_LEN, is_valid_name};

/// Flags of `tokenguard-agent`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tokenguard-agent",
    version,
    about = "Reports reads of AWS web-identity tokens (IRSA, EKS Pod Identity) on this node",
    after_help = "To replay recorded reads and CloudTrail files through the detection engine \
                  instead, run: tokenguard-agent replay --help"
)]
pub struct Cli {
    /// Destination of events: `stdout` (one JSON line each), or the detector's Lambda Function URL
    /// (`https://...`; `http://127.0.0.1:<port>` is accepted for tests).
    #[arg(long, value_name = "URL|stdout", conflicts_with = "embedded")]
    pub sink: Option<String>,

    /// Run detection inside the agent, keeping the baseline in DIR and printing each finding
    /// as one JSON line on stdout.
    #[arg(long, value_name = "DIR")]
    pub embedded: Option<PathBuf>,

    /// Cluster name put in every event.
    #[arg(long, env = "TOKENGUARD_CLUSTER")]
    pub cluster: String,

    /// Kubernetes node name of this node [default: the host name].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// AWS region of the Function URL, for SigV4 [default: AWS_REGION, or the region in the
    /// Function URL's host name].
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// How long a workload learns its token readers silently before unfamiliar readers raise
    /// findings (embedded mode), such as 12h or 7d.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = learning_period)]
    pub learning_period: Duration,

    /// How long a reader is remembered without being seen again (embedded mode); must be
    /// longer than the learning period.
    #[arg(long, default_value = "28d", value_name = "DURATION", value_parser = forget_after)]
    pub forget_after: Duration,

    /// The kubelet's root directory (its --root-dir), under which it keeps pod volumes.
    #[arg(long, default_value = DEFAULT_KUBELET_ROOT, value_name = "DIR")]
    pub kubelet_root: PathBuf,

    /// Run without the Kubernetes API: events carry pod uids and container ids only. Overrides
    /// --kubeconfig and KUBECONFIG.
    #[arg(long)]
    pub no_kube: bool,

    /// Kubeconfig for the pod watch [default: ~/.kube/config, else the in-cluster service
    /// account].
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// How long to wait for the pod watch to deliver a pod that just started before
    /// reporting its read without names, such as 2s.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = pod_lookup_wait)]
    pub pod_lookup_wait: Duration,

    /// Address to serve Prometheus metrics on at /metrics, such as 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// procfs of the host pid namespace, such as /host/proc when mounted into the agent's pod.
    #[arg(long, default_value = DEFAULT_PROC_ROOT, value_name = "DIR")]
    pub host_proc: PathBuf,

    /// The host's cgroup v2 mount [default: the cgroup2 mount in /proc/self/mounts, else
    /// /sys/fs/cgroup].
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// Handling of the detector's orders to kill a process that read a token (HTTP sink only).
    /// `follow` sends SIGKILL if the process is still the one named, and `ignore` kills nothing
    /// and reports each order as disabled.
    #[arg(long, value_enum, default_value_t = KillOrders::Follow, value_name = "MODE")]
    pub kill_orders: KillOrders,

    /// Read open records from FILE (one JSON object per line) instead of the kernel, for
    /// debugging and tests.
    #[arg(long, value_name = "FILE")]
    pub replay_opens: Option<PathBuf>,
}

fn learning_period(value: &str) -> Result<Duration, String> {
    parse_duration("learning-period", value).map_err(|e| e.to_string())
}

fn forget_after(value: &str) -> Result<Duration, String> {
    parse_duration("forget-after", value).map_err(|e| e.to_string())
}

fn pod_lookup_wait(value: &str) -> Result<Duration, String> {
    parse_duration("pod-lookup-wait", value).map_err(|e| e.to_string())
}

/// Destination of the agent's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    /// The detector's Function URL, with the region to sign for.
    Http {
        url: Url,
        region: String,
    },
    /// The engine in process, with its state directory.
    Embedded {
        state_dir: PathBuf,
    },
}

/// Settings of one agent run.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: String,
    pub node_name: String,
    pub output: Output,
    /// Learning settings of embedded mode.
    pub policy: Policy,
    /// `None` runs without the Kubernetes API.
    pub kube: Option<KubeAccess>,
    pub pod_lookup_wait: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub kubelet_root: PathBuf,
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    /// Kernel hook reported in each batch's `node.hook`.
    pub hook: Option<String>,
    /// Handling of the detector's kill orders in the HTTP sink.
    pub kill_orders: KillOrders,
}

impl Config {
    /// Settings for a node with defaults for everything but the names.
    pub fn new(cluster: impl Into<String>, node_name: impl Into<String>) -> Config {
        Config {
            cluster: cluster.into(),
            node_name: node_name.into(),
            output: Output::Stdout,
            policy: Policy::default(),
            kube: Some(KubeAccess::Infer),
            pod_lookup_wait: Duration::from_secs(2),
            metrics_addr: None,
            kubelet_root: PathBuf::from(DEFAULT_KUBELET_ROOT),
            proc_root: PathBuf::from(DEFAULT_PROC_ROOT),
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            hook: None,
            kill_orders: KillOrders::Follow,
        }
    }
}

/// A flag value that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `--sink` is neither `stdout` nor a usable URL.
    #[error(
        "invalid --sink {value:?}: {reason}; expected stdout, the detector's https:// Function \
         URL, or http://127.0.0.1:<port> for tests"
    )]
    Sink { value: String, reason: String },
    /// No region was given or found in the URL.
    #[error(
        "missing AWS region for --sink {url}: pass --region or set AWS_REGION to the region of \
         the Function URL"
    )]
    MissingRegion { url: String },
    /// A name flag is empty, too long or has a character the detector rejects.
    #[error(
        "invalid {flag} {value:?}: expected a name of 1 to {MAX_NAME_LEN} bytes without '/' or control \
         characters"
    )]
    Name { flag: &'static str, value: String },
    /// The node name was not given and the host name could not be read.
    #[error("failed to read the host name ({0}); pass --node-name or set NODE_NAME")]
    Hostname(std::io::Error),
    /// The learning settings do not fit together.
    #[error("{0}; pass a longer --forget-after or a shorter --learning-period")]
    Policy(tokenguard_core::PolicyError),
}

impl Cli {
    /// Checks the flags and builds the settings.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        check_name("--cluster", &self.cluster)?;
        let node_name = match self.node_name {
            Some(name) => name,
            None => hostname::get()
                .map_err(ConfigError::Hostname)?
                .to_string_lossy()
                .into_owned(),
        };
        check_name("--node-name", &node_name)?;

        let output = match (&self.embedded, self.sink.as_deref()) {
            (Some(dir), _) => Output::Embedded {
                state_dir: dir.clone(),
            },
            (None, None | Some("stdout") | Some("-")) => Output::Stdout,
            (None, Some(value)) => {
                let url = parse_sink_url(value)?;
                let region = self
                    .region
                    .clone()
                    .filter(|r| !r.trim().is_empty())
                    .or_else(|| region_from_host(&url))
                    .ok_or_else(|| ConfigError::MissingRegion {
                        url: value.to_owned(),
                    })?;
                Output::Http { url, region }
            }
        };

        let policy = Policy {
            learning_period: self.learning_period,
            forget_after: self.forget_after,
            ..Policy::default()
        };
        policy.validate().map_err(ConfigError::Policy)?;

        let kube = match (self.no_kube, self.kubeconfig) {
            (true, _) => None,
            (false, Some(path)) => Some(KubeAccess::Kubeconfig(path)),
            (false, None) => Some(KubeAccess::Infer),
        };

        Ok(Config {
            cluster: self.cluster,
            node_name,
            output,
            policy,
            kube,
            pod_lookup_wait: self.pod_lookup_wait,
            metrics_addr: self.metrics_addr,
            kubelet_root: self.kubelet_root,
            proc_root: self.host_proc,
            cgroup_root: self.cgroup_root.unwrap_or_else(detect_cgroup_root),
            hook: None,
            kill_orders: self.kill_orders,
        })
    }
}

/// The cgroup v2 mount this process sees, else [`DEFAULT_CGROUP_ROOT`].
fn detect_cgroup_root() -> PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|mounts| find_cgroup2_mount(&mounts))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CGROUP_ROOT))
}

/// Checks a name that every event or batch carries, because the detector
/// would reject all of them.
fn check_name(flag: &'static str, value: &str) -> Result<(), ConfigError> {
    if !is_valid_name(value) {
        return Err(ConfigError::Name {
            flag,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Accepts `https://` URLs, and `http://` only to a loopback address.
fn parse_sink_url(value: &str) -> Result<Url, ConfigError> {
    let invalid = |reason: &str| ConfigError::Sink {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(value).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                Some(url::Host::Domain(name)) => name == "localhost",
                None => false,
            };
            if !loopback {
                return Err(invalid("plain http is only allowed to a loopback address"));
            }
        }
        _ => return Err(invalid("the scheme must be https")),
    }
    if url.host().is_none() {
        return Err(invalid("the URL has no host"));
    }
    Ok(url)
}

/// Extracts the region from a Function URL host, `<id>.lambda-url.<region>.on.aws`.
fn region_from_host(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let rest = host.split_once(".lambda-url.")?.1;
    let region = rest.strip_suffix(".on.aws")?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec![
            "tokenguard-agent",
            "--cluster",
            "prod",
            "--node-name",
            "node-a",
        ];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_to_stdout_with_kube() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.output, Output::Stdout);
        assert_eq!(config.kube, Some(KubeAccess::Infer));
        assert_eq!(config.policy, Policy::default());
        assert_eq!(config.pod_lookup_wait, Duration::from_secs(2));
    }

    #[test]
    fn region_taken_from_function_url() {
        let config = parse(&["--sink", "https://abcdefg.lambda-url.eu-west-1.on.aws/"]).unwrap();
        let Output::Http { region, .. } = config.output else {
            panic!("expected http output");
        };
        assert_eq!(region, "eu-west-1");
    }

    #[test]
    fn region_flag_wins() {
        let config = parse(&[
            "--sink",
            "https://abcdefg.lambda-url.eu-west-1.on.aws/",
            "--region",
            "us-east-2",
        ])
        .unwrap();
        assert!(matches!(config.output, Output::Http { region, .. } if region == "us-east-2"));
    }

    #[test]
    fn loopback_http_accepted() {
        let config = parse(&["--sink", "http://127.0.0.1:8080/", "--region", "eu-west-1"]).unwrap();
        assert!(matches!(config.output, Output::Http { .. }));
    }

    #[test]
    fn remote_plain_http_rejected() {
        let error = parse(&[
            "--sink",
            "http://detector.example/",
            "--region",
            "eu-west-1",
        ])
        .unwrap_err();
        assert!(
            error.contains("invalid --sink \"http://detector.example/\""),
            "{error}"
        );
        assert!(error.contains("loopback"), "{error}");
    }

    #[test]
    fn missing_region_named() {
        let error = parse(&["--sink", "https://detector.example/"]).unwrap_err();
        assert!(error.starts_with("missing AWS region"), "{error}");
    }

    #[test]
    fn sink_and_embedded_conflict() {
        let error = parse(&["--sink", "stdout", "--embedded", "/tmp/x"]).unwrap_err();
        assert!(error.contains("cannot be used with"), "{error}");
    }

    #[test]
    fn bad_duration_names_value() {
        let error = parse(&["--learning-period", "7days-ish"]).unwrap_err();
        assert!(
            error.contains("invalid learning-period \"7days-ish\": expected a duration"),
            "{error}"
        );
    }

    #[test]
    fn forget_before_learning_rejected() {
        let error = parse(&["--learning-period", "7d", "--forget-after", "1d"]).unwrap_err();
        assert!(error.contains("pass a longer --forget-after"), "{error}");
    }

    #[test]
    fn kill_orders_followed_by_default() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.kill_orders, KillOrders::Follow);
    }

    #[test]
    fn kill_orders_ignored_on_request() {
        let config = parse(&["--kill-orders", "ignore"]).unwrap();
        assert_eq!(config.kill_orders, KillOrders::Ignore);
    }

    #[test]
    fn kill_orders_unknown_mode_rejected() {
        let error = parse(&["--kill-orders", "maybe"]).unwrap_err();
        assert!(error.contains("invalid value 'maybe'"), "{error}");
        assert!(error.contains("follow, ignore"), "{error}");
    }

    #[test]
    fn no_kube_disables_watch() {
        let config = parse(&["--no-kube"]).unwrap();
        assert_eq!(config.kube, None);
    }

    #[test]
    fn no_kube_overrides_kubeconfig() {
        let config = parse(&["--no-kube", "--kubeconfig", "/root/.kube/config"]).unwrap();
        assert_eq!(config.kube, None);
    }

    #[test]
    fn cluster_with_slash_rejected() {
        let cli = Cli::try_parse_from([
            "tokenguard-agent",
            "--cluster",
            "prod/eu",
            "--node-name",
            "n",
        ])
        .unwrap();
        let error = cli.into_config().unwrap_err().to_string();
        assert!(
            error.starts_with("invalid --cluster \"prod/eu\""),
            "{error}"
        );
        assert!(error.contains("without '/'"), "{error}");
    }

    #[test]
    fn node_name_with_slash_rejected() {
        let argv = [
            "tokenguard-agent",
            "--cluster",
            "prod",
            "--node-name",
            "rack-1/node-a",
        ];
        let error = Cli::try_parse_from(argv)
            .unwrap()
            .into_config()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid --node-name \"rack-1/node-a\""),
            "{error}"
        );
    }

    #[test]
    fn empty_cluster_rejected() {
        let cli =
            Cli::try_parse_from(["tokenguard-agent", "--cluster", "", "--node-name", "n"]).unwrap();
        assert!(
            cli.into_config()
                .unwrap_err()
                .to_string()
                .starts_with("invalid --cluster")
        );
    }
}

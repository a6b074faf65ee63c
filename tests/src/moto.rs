//! A moto server on 127.0.0.1 that emulates DynamoDB, SNS, SQS and EKS.
//!
//! The server runs from the Python virtual environment named by
//! `TOKENGUARD_VENV`, by default `<workspace root>/.venv`, which
//! `requirements-dev.txt` sets up. Each [`MotoServer`] is its own child process
//! on a free port, so tests can run in parallel without sharing state.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use thiserror::Error;

/// Region of every client and resource in the tests.
pub const REGION: &str = "eu-west-1";
/// Account id that moto uses for every resource it creates.
pub const ACCOUNT_ID: &str = "123456789012";
/// Fake access key id and secret; moto accepts any.
pub const FAKE_KEY: &str = "testing";

/// Maximum wait for a new moto server to respond.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts moto's werkzeug app without request threads, so the server handles
/// one request at a time. Arguments: host, port.
///
/// moto 5.2 draws one OIDC issuer id when it loads and gives it to every EKS
/// cluster, while EKS gives each cluster its own. The script makes moto draw
/// a new 32-digit id for each cluster, as EKS does, so that tests of two
/// clusters see two issuers.
const SERIAL_SERVER: &str = r#"
import secrets
import sys
import moto.eks.models as eks_models
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)

class IssuerPerCluster(str):
    def format(self, **fields):
        base = "https://oidc.eks.{region}.amazonaws.com/id/".format(**fields)
        return base + secrets.token_hex(16).upper()

eks_models.ISSUER_TEMPLATE = IssuerPerCluster()
app = DomainDispatcherApplication(create_backend_app)
run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=False,
           request_handler=MotoRequestHandler)
"#;

/// A reason a test helper process could not start.
#[derive(Debug, Error)]
pub enum HelperError {
    /// A program of the virtual environment is missing.
    #[error(
        "{program} not found at {path}: create the venv with `python3 -m venv .venv && \
         .venv/bin/pip install -r requirements-dev.txt`, or set TOKENGUARD_VENV to a venv that has it"
    )]
    MissingProgram { program: String, path: PathBuf },
    /// The process could not be spawned.
    #[error("failed to start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it responded.
    #[error("{program} exited with {status} before it responded on {address}")]
    Exited {
        program: String,
        status: std::process::ExitStatus,
        address: SocketAddr,
    },
    /// The process did not respond in time.
    #[error("{program} timed out: no response on {address} within {}s", timeout.as_secs())]
    Timeout {
        program: String,
        address: SocketAddr,
        timeout: Duration,
    },
    /// No free port could be found.
    #[error("failed to reserve a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    /// A request to a running helper failed.
    #[error("failed to {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Root of the Cargo workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits one level below the workspace root")
        .to_path_buf()
}

/// Returns the Python virtual environment with moto and cargo-lambda.
pub fn venv() -> PathBuf {
    match std::env::var_os("TOKENGUARD_VENV") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join(".venv"),
    }
}

/// Path of `program` in the virtual environment's `bin`, if it exists.
pub fn venv_program(program: &str) -> Result<PathBuf, HelperError> {
    let path = venv().join("bin").join(program);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HelperError::MissingProgram {
            program: program.to_owned(),
            path,
        })
    }
}

/// Folder for the output of helper processes: `target/test-logs`.
pub fn log_dir() -> PathBuf {
    workspace_root().join("target").join("test-logs")
}

/// Returns a port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, HelperError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(HelperError::Port)?;
    Ok(listener.local_addr().map_err(HelperError::Port)?.port())
}

/// Shell script that runs its arguments in a new session, and so in their own
/// process group. It kills that group when its standard input closes, which
/// happens when the guard is dropped or the test process exits in any way,
/// panics and signals included. It exits with the status of its arguments when they end first.
/// The watcher reads a copy of stdin on fd 3, because a shell without job
/// control gives a background list /dev/null as stdin.
const WATCHDOG: &str = r#"
exec 3<&0
setsid "$@" < /dev/null 3<&- &
job=$!
(
    while read -r _ <&3; do :; done
    kill -TERM "-$job" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "-$job" 2>/dev/null || exit 0
        sleep 0.2
    done
    kill -KILL "-$job" 2>/dev/null
) <&3 &
watcher=$!
wait "$job"
status=$?
kill -KILL "-$job" 2>/dev/null
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// A child process that is killed with its whole process group on drop, and
/// also when the process that started it dies.
#[derive(Debug)]
pub struct GuardedChild {
    name: String,
    watchdog: Child,
    stdin: Option<ChildStdin>,
}

impl GuardedChild {
    /// Spawns `command` under the watchdog, with stdout and stderr appended
    /// to `log`.
    pub fn spawn(name: &str, command: &Command, log: &Path) -> Result<GuardedChild, HelperError> {
        let spawn_error = |source| HelperError::Spawn {
            program: name.to_owned(),
            source,
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(spawn_error)?;
        }
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(spawn_error)?;
        let stderr = stdout.try_clone().map_err(spawn_error)?;
        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            // Its own group, so a Ctrl-C to the test run reaches it only
            // through the closed pipe, after the test process is gone.
            .process_group(0);
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => watchdog.env(key, value),
                None => watchdog.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            watchdog.current_dir(dir);
        }
        let mut child = watchdog.spawn().map_err(spawn_error)?;
        let stdin = child.stdin.take();
        Ok(GuardedChild {
            name: name.to_owned(),
            watchdog: child,
            stdin,
        })
    }

    /// Returns the exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.watchdog.try_wait().ok().flatten()
    }

    /// Waits until `probe` returns true, or fails when the process exits or
    /// `timeout` passes. `address` is only named in errors.
    pub fn wait_until(
        &mut self,
        address: SocketAddr,
        timeout: Duration,
        mut probe: impl FnMut() -> bool,
    ) -> Result<(), HelperError> {
        let deadline = Instant::now() + timeout;
        loop {
            if probe() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(HelperError::Exited {
                    program: self.name.clone(),
                    status,
                    address,
                });
            }
            if Instant::now() >= deadline {
                return Err(HelperError::Timeout {
                    program: self.name.clone(),
                    address,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for GuardedChild {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog kill the process group.
        drop(self.stdin.take());
        let _ = self.watchdog.wait();
    }
}

/// Status code of the response to `GET path`, or `None` when the connection
/// fails or no response arrives within `read_timeout`.
pub fn http_status(address: SocketAddr, path: &str, read_timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    // "HTTP/1.1 200": the code is bytes 9 to 12.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    if !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// How the moto server schedules requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// `moto_server` as shipped: one thread per request.
    Threaded,
    /// One request at a time. moto 5.2.5 checks a condition expression and
    /// applies the write as two steps without a lock, so only this mode gives
    /// the atomic conditional writes that DynamoDB guarantees.
    Serial,
}

/// A running moto server, stopped on drop.
#[derive(Debug)]
pub struct MotoServer {
    address: SocketAddr,
    _child: GuardedChild,
}

impl MotoServer {
    /// Starts `moto_server -H 127.0.0.1 -p <free port>` and waits until it responds.
    pub fn start() -> Result<MotoServer, HelperError> {
        MotoServer::start_with(Scheduling::Threaded)
    }

    /// Starts a moto server that handles one request at a time.
    pub fn start_serial() -> Result<MotoServer, HelperError> {
        MotoServer::start_with(Scheduling::Serial)
    }

    pub fn start_with(scheduling: Scheduling) -> Result<MotoServer, HelperError> {
        // Another process may take the port between the check and the bind.
        let mut last_error = None;
        for _ in 0..3 {
            match MotoServer::try_start(scheduling) {
                Ok(server) => return Ok(server),
                Err(error @ HelperError::Exited { .. }) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }

    fn try_start(scheduling: Scheduling) -> Result<MotoServer, HelperError> {
        let port = free_port()?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut command = match scheduling {
            Scheduling::Threaded => {
                let mut command = Command::new(venv_program("moto_server")?);
                command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                command
            }
            Scheduling::Serial => {
                let mut command = Command::new(venv_program("python")?);
                command.args(["-c", SERIAL_SERVER, "127.0.0.1", &port.to_string()]);
                command
            }
        };
        command.env("MOTO_PORT", port.to_string());
        let log = log_dir().join(format!("moto-{port}.log"));
        let mut child = GuardedChild::spawn("moto_server", &command, &log)?;
        child.wait_until(address, START_TIMEOUT, || {
            http_status(address, "/moto-api/", Duration::from_secs(5)).is_some()
        })?;
        Ok(MotoServer {
            address,
            _child: child,
        })
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL` and SDK configs.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Builds an SDK config for this server: region `eu-west-1`, static fake
    /// credentials and the server as endpoint, with nothing read from the
    /// environment, so no client can reach a real AWS host or a metadata service.
    pub fn sdk_config(&self) -> SdkConfig {
        let credentials = Credentials::new(FAKE_KEY, FAKE_KEY, None, None, "tokenguard-tests");
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .endpoint_url(self.endpoint())
            .build()
    }

    /// Environment variables that point a process using the SDK's standard
    /// loading at this server with fake credentials.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", FAKE_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", FAKE_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// Everything moto holds, from its `/moto-api/data.json` endpoint:
    /// `{service: {model: [instance attributes]}}`.
    pub fn model_data(&self) -> Result<serde_json::Value, std::io::Error> {
        let mut stream = TcpStream::connect(self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let request = format!(
            "GET /moto-api/data.json HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        );
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        let (_, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("moto-api response has no body"))?;
        serde_json::from_str(body).map_err(std::io::Error::other)
    }

    /// Messages published to SNS topic `topic_arn`, as moto recorded them:
    /// `[message_id, message, subject, message_attributes, group_id]` each.
    pub fn sns_notifications(
        &self,
        topic_arn: &str,
    ) -> Result<Vec<serde_json::Value>, std::io::Error> {
        let data = self.model_data()?;
        let topics = data["sns"]["Topic"].as_array().cloned().unwrap_or_default();
        Ok(topics
            .into_iter()
            .find(|topic| topic["arn"] == topic_arn)
            .and_then(|topic| topic["sent_notifications"].as_array().cloned())
            .unwrap_or_default())
    }
}

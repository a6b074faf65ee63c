//! The Lambdas under cargo-lambda's emulator (`cargo lambda watch`), reached
//! on 127.0.0.1 over the Function URL endpoint or the Invoke API.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::moto::{
    GuardedChild, HelperError, free_port, http_status, log_dir, venv_program, workspace_root,
};

/// Maximum wait for the emulator to compile the function and respond. A first
/// build of the AWS SDK takes several minutes on a 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Checks whether cargo sets `name` for the package whose binary it runs.
fn is_package_variable(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// How to tell that the emulator runs the function, not only its build.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// The function answers a GET on its Function URL with 405, which only
    /// the detector's own handler does.
    FunctionUrl,
    /// An invocation with this payload returns 200.
    Invoke(String),
}

/// The cargo profile the emulator builds a function in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// The dev profile, quick to build, for tests.
    #[default]
    Dev,
    /// The release profile, as deployed, for benchmarks. Its first build
    /// takes several minutes more.
    Release,
}

/// A function running under `cargo lambda watch`, stopped on drop.
#[derive(Debug)]
pub struct LambdaEmulator {
    address: SocketAddr,
    function: String,
    log: PathBuf,
    _child: GuardedChild,
}

impl LambdaEmulator {
    /// Builds binary `function` of `package` and serves it with `env` set,
    /// allowing `concurrency` invocations at once, then waits until the
    /// function responds on its URL.
    ///
    /// The emulator builds into `target/lambda-emulator`, apart from the
    /// target folder of the running `cargo test`, whose lock it would wait on.
    pub fn start(
        package: &str,
        function: &str,
        env: &[(&str, String)],
        concurrency: u32,
    ) -> Result<LambdaEmulator, HelperError> {
        LambdaEmulator::start_with(
            package,
            function,
            env,
            concurrency,
            Readiness::FunctionUrl,
            Profile::Dev,
        )
    }

    /// Like [`LambdaEmulator::start`], waiting for `readiness`, with the
    /// function built in `profile`.
    pub fn start_with(
        package: &str,
        function: &str,
        env: &[(&str, String)],
        concurrency: u32,
        readiness: Readiness,
        profile: Profile,
    ) -> Result<LambdaEmulator, HelperError> {
        let port = free_port()?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let root = workspace_root();
        let mut command = Command::new(venv_program("cargo-lambda")?);
        command
            .current_dir(&root)
            .args(["lambda", "watch", "--ignore-changes", "--quiet"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--package", package, "--bin", function])
            .args(match profile {
                Profile::Dev => &[][..],
                Profile::Release => &["--release"][..],
            })
            // NOTE: cargo-lambda 1.9.2 passes its `--target-dir` option on to
            // `cargo metadata`, which rejects it, so the folder is set here.
            .env(
                "CARGO_TARGET_DIR",
                root.join("target").join("lambda-emulator"),
            );
        // `--env-var` splits its value at commas, so a list such as
        // TOKENGUARD_CLUSTERS=a,b goes through a file instead.
        let env_file = log_dir().join(format!("lambda-{function}-{port}.env"));
        let lines: String = env
            .iter()
            .map(|(key, value)| format!("{key}={}\n", quote_env_value(value)))
            .collect();
        std::fs::create_dir_all(log_dir())
            .and_then(|()| std::fs::write(&env_file, lines))
            .map_err(|source| HelperError::Io {
                what: format!("write {}", env_file.display()),
                source,
            })?;
        command.arg("--env-file").arg(&env_file);
        // `cargo test` gives each test binary the CARGO_MANIFEST_DIR, CARGO_PKG_* and OUT_DIR
        // of its own package. Build scripts such as ring's declare rerun-if-env-changed on
        // them, so without this the emulator's `cargo run` rebuilds the detector each time a
        // test binary of another package started it last.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(is_package_variable) {
                command.env_remove(key);
            }
        }
        let log = log_dir().join(format!("lambda-{function}-{port}.log"));
        let mut child = GuardedChild::spawn("cargo lambda watch", &command, &log)?;
        // The emulator accepts connections before the build ends and queues or
        // fails invocations until the function runs.
        let url_path = format!("/lambda-url/{function}/");
        let invoke_path = invoke_path(function);
        child.wait_until(address, START_TIMEOUT, || match &readiness {
            Readiness::FunctionUrl => {
                http_status(address, &url_path, Duration::from_secs(120)) == Some(405)
            }
            Readiness::Invoke(payload) => {
                post(address, &invoke_path, payload, Duration::from_secs(120))
                    .is_ok_and(|(status, _)| status == 200)
            }
        })?;
        Ok(LambdaEmulator {
            address,
            function: function.to_owned(),
            log,
            _child: child,
        })
    }

    /// Returns a handle that invokes the function through the Invoke API.
    pub fn invoker(&self) -> Invoker {
        Invoker {
            address: self.address,
            function: self.function.clone(),
        }
    }

    /// `http://127.0.0.1:<port>/lambda-url/<function>/`.
    pub fn function_url(&self) -> String {
        format!("http://{}/lambda-url/{}/", self.address, self.function)
    }

    /// File with the emulator's and the function's output.
    pub fn log(&self) -> &PathBuf {
        &self.log
    }
}

/// Invokes one function of an emulator; it blocks, so async code runs it
/// on a blocking thread.
#[derive(Debug, Clone)]
pub struct Invoker {
    address: SocketAddr,
    function: String,
}

impl Invoker {
    /// Invokes the function with `payload` and returns the status and the
    /// function's response.
    pub fn invoke(&self, payload: &str) -> Result<(u16, String), HelperError> {
        post(
            self.address,
            &invoke_path(&self.function),
            payload,
            Duration::from_secs(300),
        )
        .map_err(|source| HelperError::Io {
            what: format!("invoke {} on the emulator", self.function),
            source,
        })
    }
}

/// Quotes a value for a dotenv file, escaping what the quotes would end.
fn quote_env_value(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

fn invoke_path(function: &str) -> String {
    format!("/2015-03-31/functions/{function}/invocations")
}

/// POSTs a JSON `body` over HTTP/1.0 and returns the status and body.
fn post(
    address: SocketAddr,
    path: &str,
    body: &str,
    read_timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};

    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(read_timeout))?;
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("the response has no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("invalid status line in {head:?}")))?;
    Ok((status, body.to_owned()))
}

//! The detector under cargo-lambda's emulator (`cargo lambda watch`), reached
//! over its Function URL endpoint on 127.0.0.1.

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
            // NOTE: cargo-lambda 1.9.2 passes its `--target-dir` option on to
            // `cargo metadata`, which rejects it, so the folder is set here.
            .env(
                "CARGO_TARGET_DIR",
                root.join("target").join("lambda-emulator"),
            );
        for (key, value) in env {
            command.arg("--env-var").arg(format!("{key}={value}"));
        }
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
        // fails invocations until the function runs. Only the function itself
        // responds to a GET with 405, so that status means ready.
        let path = format!("/lambda-url/{function}/");
        child.wait_until(address, START_TIMEOUT, || {
            http_status(address, &path, Duration::from_secs(120)) == Some(405)
        })?;
        Ok(LambdaEmulator {
            address,
            function: function.to_owned(),
            log,
            _child: child,
        })
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

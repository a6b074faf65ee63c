//! Serves the Kubernetes API stand-in with the fixture pod on a free port of
//! 127.0.0.1, writes a kubeconfig for it, and runs until SIGINT or SIGTERM.
//! The demo uses it so the agent can name the pod it sees.

use std::path::PathBuf;

use tokenguard_e2e::fixtures::{CONTAINER_ID, NODE, POD_UID, irsa_pod_on};
use tokenguard_e2e::kube_api::KubeApi;

const USAGE: &str = "usage: tokenguard-kube-standin --kubeconfig FILE [--node NAME] \
                     [--pod-uid UID] [--container-id ID]";

struct Options {
    kubeconfig: PathBuf,
    node: String,
    pod_uid: String,
    container_id: String,
}

fn parse_options() -> Result<Options, String> {
    let mut kubeconfig = None;
    let mut node = NODE.to_owned();
    let mut pod_uid = POD_UID.to_owned();
    let mut container_id = CONTAINER_ID.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or(format!("missing value for {flag}\n{USAGE}"))
        };
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--node" => node = value()?,
            "--pod-uid" => pod_uid = value()?,
            "--container-id" => container_id = value()?,
            _ => return Err(format!("unknown option {flag:?}\n{USAGE}")),
        }
    }
    let kubeconfig = kubeconfig.ok_or(format!("missing --kubeconfig\n{USAGE}"))?;
    Ok(Options {
        kubeconfig,
        node,
        pod_uid,
        container_id,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("tokenguard-kube-standin: {message}");
            return std::process::ExitCode::from(2);
        }
    };

    let api = match KubeApi::start().await {
        Ok(api) => api,
        Err(error) => {
            eprintln!("tokenguard-kube-standin: failed to listen on 127.0.0.1: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    api.add_pod(irsa_pod_on(
        &options.node,
        &options.pod_uid,
        &options.container_id,
    ));

    // Write to a temporary name first, so a reader never sees half a file.
    let partial = options.kubeconfig.with_extension("partial");
    let written = api
        .write_kubeconfig(&partial)
        .and_then(|()| std::fs::rename(&partial, &options.kubeconfig));
    if let Err(error) = written {
        let path = options.kubeconfig.display();
        eprintln!("tokenguard-kube-standin: failed to write kubeconfig {path}: {error}");
        return std::process::ExitCode::FAILURE;
    }
    eprintln!(
        "tokenguard-kube-standin: serving {} on node {}",
        api.url(),
        options.node
    );

    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
    std::process::ExitCode::SUCCESS
}

//! Prints each AWS token read-open the kernel probe sees as one JSON line on stdout.
//!
//! Run as root: `cargo run -p tokenguard-agent --example trace_tokens`. Stop with Ctrl-C,
//! which prints the probe's counters on stderr.
//!
//! With `--check-btf FILE` it only checks that the eBPF object relocates against the kernel BTF
//! in FILE (raw BTF, like /sys/kernel/btf/vmlinux) and that this kernel loads the result.

use std::io::Write;

use tokenguard_agent::ebpf;
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, btf] = &args[..]
        && flag == "--check-btf"
    {
        let loaded = ebpf::check_relocations(std::path::Path::new(btf))?;
        eprintln!("{btf}: relocated and loaded {loaded:?}");
        return Ok(());
    }
    if !args.is_empty() {
        anyhow::bail!("invalid arguments {args:?}: pass nothing, or --check-btf FILE");
    }

    let mut probe = ebpf::Probe::load()?;
    eprintln!(
        "tracing token opens with {} on {:?}; Ctrl-C stops",
        probe.hook(),
        probe.tracepoints()
    );

    let mut stdout = std::io::stdout().lock();
    let mut lost_check = tokio::time::interval(std::time::Duration::from_secs(10));
    let mut lost_reported = 0;
    loop {
        tokio::select! {
            open = probe.next() => {
                let Some(open) = open else { break };
                serde_json::to_writer(&mut stdout, &open)?;
                writeln!(stdout)?;
                stdout.flush()?;
            }
            _ = lost_check.tick() => {
                let lost = probe.lost_events()?;
                if lost > lost_reported {
                    tracing::warn!(lost, "ring buffer was full, token opens were dropped");
                    lost_reported = lost;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }

    let counters = probe.counters()?;
    eprintln!("{}", serde_json::to_string(&counters)?);
    Ok(())
}

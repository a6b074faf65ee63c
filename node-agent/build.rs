//! Compiles the eBPF program in `node-agent-ebpf/` with clang into `OUT_DIR`, where
//! `src/ebpf/loader.rs` embeds it.

use std::env;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;

/// Sources of the eBPF object, relative to `node-agent-ebpf/`.
const SOURCES: [&str; 3] = ["tokenguard.bpf.c", "tokenguard.h", "vmlinux_min.h"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets this"));
    let source_dir = manifest_dir.join("../node-agent-ebpf");
    for source in SOURCES {
        println!(
            "cargo:rerun-if-changed={}",
            source_dir.join(source).display()
        );
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    // The eBPF target arch only matters to libbpf's bpf_tracing.h, but the multiarch include
    // directory must match the build target, because it contains <asm/types.h>.
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets this");
    let (bpf_arch, multiarch) = match target_arch.as_str() {
        "x86_64" => ("x86", "x86_64-linux-gnu"),
        "aarch64" => ("arm64", "aarch64-linux-gnu"),
        other => {
            panic!("unsupported target arch {other} for the eBPF program: use x86_64 or aarch64")
        }
    };

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let object = out_dir.join("tokenguard.bpf.o");
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-target", "bpf"])
        .arg(format!("-D__TARGET_ARCH_{bpf_arch}"))
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(source_dir.join("tokenguard.bpf.c"))
        .arg("-o")
        .arg(&object)
        .output();

    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            panic!("clang not found: install Debian's clang and libbpf-dev (or set CLANG)")
        }
        Err(error) => panic!("failed to run {clang}: {error}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "{clang} failed to compile tokenguard.bpf.c ({}); libbpf headers come from Debian's \
             libbpf-dev:\n{stderr}",
            output.status
        );
    }
    for line in stderr.lines() {
        println!("cargo:warning={line}");
    }
}

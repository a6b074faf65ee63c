//! Userspace half of the tokenguard node agent.
//!
//! The agent takes token opens from an event source, which is the eBPF probe
//! or a replay file. It builds `TokenRead` events with process, container and
//! pod details, and sends them to a sink: stdout, the detector's Function URL,
//! or the detection engine embedded in the agent.
//!
//! The kernel source is [`kernel::kernel_source`]: it turns each event of the
//! [`ebpf::Probe`] into an [`OpenRecord`] for [`Agent::run`], and its counters
//! go to [`Metrics::set_kernel_lost_source`] and
//! [`Metrics::set_kernel_repeats_source`] on [`Agent::metrics`].

pub mod cgroup;
pub mod classify;
pub mod cli;
pub mod ebpf;
pub mod kernel;
pub mod kill;
pub mod metrics;
pub mod pipeline;
pub mod pods;
pub mod procfs;
pub mod record;
pub mod replay;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod store;

pub use cli::{Cli, Config, Output};
pub use metrics::Metrics;
pub use record::OpenRecord;
pub use runtime::{Agent, AgentError, run};

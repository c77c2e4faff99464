//! keelson's node agent. Today: [`SimulatedNodes`], many fake nodes in one process that
//! register, keep their leases and status fresh, and act as the kubelet for the pods bound
//! to them (Pending → Running and Ready after a delay, graceful deletion, containers that
//! exit on demand, pods that run to completion). It is the scale harness of the scheduler
//! and controller tests and benchmarks.
//!
//! The containerd-backed kubelet is being built: [`cri`] runs the agent's own containerd
//! (its config, a locally made pause image, the CNI network list) and holds the CRI
//! clients; [`kubelet`] registers the machine as a Node, keeps its Lease and status fresh
//! and writes the pod network from its pod CIDR. Pod workers come next.

pub mod cri;
pub mod kubelet;
mod lease;
mod sim;

pub use sim::{EXIT_CODE, RUN_MS, SimConfig, SimError, SimulatedNodes};

//! keelson's scheduler, as pure decisions: given a snapshot of the nodes (with the pods on
//! them) and a pod, which node it goes to, or why none fits.
//!
//! The shape is the Kubernetes scheduler framework's: one small trait per extension point
//! ([`Filter`], [`Score`]), a [`CycleState`] computed once per pod, and a [`Profile`] — the
//! explicit, in-code registry of the plugins that run, in order. [`schedule`] runs one
//! scheduling cycle; [`Snapshot::assume`] records a decision so the next cycle sees it
//! (the Reserve step). [`run`] is the scheduler as an API client: reflectors, the queue,
//! binding through `pods/binding`, and `FailedScheduling` events.

mod framework;
pub mod plugins;
mod preemption;
mod resources;
mod run;
mod snapshot;
mod state;
mod terms;

pub use framework::{
    CycleState, Filter, FitError, NodeCursor, Placement, Profile, Score, schedule, schedule_sampled,
};
pub use preemption::{Preemption, preempt};
pub use resources::{Resources, pod_requests};
pub use run::{SchedulerConfig, SchedulerError, run};
pub use snapshot::{NodeInfo, Snapshot};

//! keelson's API model, without IO: which Kubernetes resources exist and how clients
//! discover them.
//!
//! * `registry.rs` — the explicit table of resources keelson serves (group, version, kind,
//!   plural, scope, short names, categories, verbs, subresources), built in code;
//! * `discovery.rs` — the discovery documents built from it: legacy (`APIVersions`,
//!   `APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated
//!   (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`).

pub mod discovery;
pub mod registry;

pub use registry::{Registry, Resource, Scope, Subresource};

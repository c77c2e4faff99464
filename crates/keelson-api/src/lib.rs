//! keelson's API model, without IO: which Kubernetes resources exist and how clients
//! discover them.
//!
//! * `registry.rs` — the explicit table of resources keelson serves (group, version, kind,
//!   plural, scope, short names, categories, verbs, subresources), built in code;
//! * `discovery.rs` — the discovery documents built from it: legacy (`APIVersions`,
//!   `APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated
//!   (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`);
//! * `cron.rs` — CronJob schedules (five fields, names, steps, `@daily` and the other
//!   descriptors, `@every`) and their time zones, and when a schedule next fires;
//! * `selector.rs` — label selectors: the full string grammar, parsed and matched;
//! * `defaults.rs` — the values Kubernetes fills in for fields left out;
//! * `fields.rs` — field selectors over the fields each kind allows;
//! * `meta.rs` — metadata rules: name validation, timestamps, Kubernetes' human ages;
//! * `table.rs` — `Table` responses for `kubectl get` (NAME, AGE, and per-kind columns);
//! * `strategic.rs` — strategic merge patch with the upstream merge keys and directives;
//! * `openapi.rs` — OpenAPI v3 documents from the k8s-openapi schemas, and the unknown-field
//!   check behind `fieldValidation`;
//! * `protobuf.rs` — Kubernetes protobuf request bodies (kubectl's imperative `create`) to JSON.

pub mod apply;
pub mod body;
pub mod conversion;
pub mod cron;
pub mod defaults;
pub mod discovery;
pub mod event;
pub mod fields;
pub mod meta;
pub mod openapi;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod selector;
pub mod strategic;
pub mod table;
pub mod validation;

pub use registry::{Registry, Resource, Scope, Subresource};

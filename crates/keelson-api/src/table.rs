//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`.
//!
//! Every kind gets NAME and AGE; kinds with columns of their own add them here.

use serde_json::{Value, json};

use crate::meta::{human_duration, parse_timestamp};

/// Whether an `Accept` header asks for a `Table`.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// Content type of a `Table` response.
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// What each row carries besides its cells (`includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn column(name: &str, kind: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
}

/// The column definitions for `kind`.
pub fn columns(kind: &str) -> Vec<Value> {
    let mut columns = vec![column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
    )];
    if kind == "Namespace" {
        columns.push(column(
            "Status",
            "string",
            "",
            "The status of the namespace",
        ));
    }
    columns.push(column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ));
    columns
}

/// The cells of one row, matching [`columns`].
fn cells(kind: &str, object: &Value, now: i64) -> Vec<Value> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let mut cells = vec![json!(name)];
    if kind == "Namespace" {
        cells.push(json!(
            object["status"]["phase"].as_str().unwrap_or_default()
        ));
    }
    let age = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_timestamp)
        .map_or_else(
            || "<unknown>".to_owned(),
            |created| human_duration(now - created),
        );
    cells.push(json!(age));
    cells
}

/// One row for `object`.
pub fn row(kind: &str, object: &Value, include: IncludeObject, now: i64) -> Value {
    let mut row = json!({"cells": cells(kind, object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"].clone(),
            });
        }
    }
    row
}

/// A whole `Table`; `with_columns` is false for the watch events after the first.
pub fn table(kind: &str, rows: Vec<Value>, metadata: Value, with_columns: bool) -> Value {
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "rows": rows,
    });
    if with_columns {
        table["columnDefinitions"] = json!(columns(kind));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_requests_are_recognized() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn rows_match_the_columns() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Active"}});
        let now = parse_timestamp("2024-01-01T00:05:00Z").expect("timestamp");
        let row = row("Namespace", &ns, IncludeObject::Metadata, now);
        assert_eq!(row["cells"], json!(["default", "Active", "5m"]));
        assert_eq!(columns("Namespace").len(), 3);
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["name"], "default");
        let cm = json!({"metadata": {"name": "c"}});
        assert_eq!(
            super::row("ConfigMap", &cm, IncludeObject::None, now)["cells"],
            json!(["c", "<unknown>"])
        );
    }
}

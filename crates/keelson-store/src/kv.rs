//! The values the store hands out: key-value records, watch events, list pages.

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::StoreError;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: i64,
    /// Revision of the latest write to the key (Kubernetes' `resourceVersion`).
    pub mod_revision: i64,
    /// Number of writes since creation: 1 after create, +1 per update.
    pub version: i64,
}

/// What a watch event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Create,
    Modify,
    Delete,
}

/// One change, as delivered by [`crate::Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// The key after the change. For a delete: the key, an empty value, `mod_revision`
    /// set to the revision of the delete, and zero `create_revision` and `version`.
    pub kv: KeyValue,
    /// The key before the change: present for modify and delete.
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    /// The delete event for `prev`, deleted at `revision`.
    pub(crate) fn deleted(prev: KeyValue, revision: i64) -> Self {
        WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: prev.key.clone(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
            },
            prev: Some(prev),
        }
    }
}

/// A watch: events in revision order; an `Err` item is the last one.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Options of [`crate::Store::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision; `None` reads at the latest and reports which one it was.
    pub revision: Option<i64>,
    /// At most this many keys; `None` or 0 for all.
    pub limit: Option<usize>,
    /// Only keys strictly after this one (the last key of the previous page).
    pub start_after: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    pub kvs: Vec<KeyValue>,
    /// The revision the page was read at; pass it back for the next page.
    pub revision: i64,
    /// More keys follow the last one of this page.
    pub more: bool,
}

/// The smallest key greater than every key starting with `prefix`, or `None` when no such
/// key exists (an empty prefix, or one made only of 0xff bytes): the end of a prefix range.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The lower bound of a list: the prefix itself, or just past `start_after` when that is
/// later in key order.
pub(crate) fn list_lower_bound(prefix: &str, start_after: Option<&str>) -> Vec<u8> {
    match start_after {
        Some(after) if after.as_bytes() >= prefix.as_bytes() => {
            let mut lower = after.as_bytes().to_vec();
            lower.push(0);
            lower
        }
        _ => prefix.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(
            prefix_end(b"/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn lower_bound_skips_past_the_continue_key() {
        assert_eq!(list_lower_bound("/a/", None), b"/a/".to_vec());
        assert_eq!(list_lower_bound("/a/", Some("/a/x")), b"/a/x\0".to_vec());
        // A continue key before the prefix cannot widen the range.
        assert_eq!(list_lower_bound("/b/", Some("/a/x")), b"/b/".to_vec());
    }
}

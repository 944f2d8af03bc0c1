//! What a write makes of a record: the rules every write follows, whichever
//! store commits it. Given the record as it stands (or the version it was
//! deleted at), a write is refused, or becomes the new value and version.

use app::event::ChangeType;
use serde_json::Value;

use super::{StoreError, StoredRecord, merge_patch, normalize};
use crate::schema::Schema;

/// A write, before it meets the record it changes.
pub(super) struct Intent<'a> {
    pub kind: ChangeType,
    pub table: &'a str,
    pub id: &'a str,
    /// The new value (put) or the merge patch (patch); `None` for a delete.
    pub input: Option<Value>,
    /// The version the writer requires the record to be at (0: absent).
    pub if_match: Option<u64>,
}

/// What the write does to the record.
pub(super) struct Effect {
    /// The record's value afterwards; `None` once deleted.
    pub value: Option<Value>,
    pub version: u64,
    /// Whether the write made a record where there was none.
    pub created: bool,
}

/// Applies `intent` to `current`. `deleted_at` is the version the record was
/// deleted at (0 if never) and is read only when there is no current record.
pub(super) fn decide(
    intent: Intent<'_>,
    current: Option<&StoredRecord>,
    deleted_at: impl FnOnce() -> Result<u64, StoreError>,
    schema: Option<&Schema>,
) -> Result<Effect, StoreError> {
    let Intent {
        kind,
        table,
        id,
        input,
        if_match,
    } = intent;
    let current_version = current.map_or(0, |r| r.version);
    if let Some(expected) = if_match
        && expected != current_version
    {
        return Err(StoreError::VersionMismatch {
            expected,
            current: current_version,
        });
    }
    let value = match kind {
        ChangeType::Put => input,
        ChangeType::Patch => {
            let Some(record) = current else {
                return Err(StoreError::NotFound(format!("{table}/{id}")));
            };
            let mut value = record.value.clone();
            if let Some(patch) = &input {
                merge_patch(&mut value, patch);
            }
            Some(value)
        }
        _ => {
            if current.is_none() {
                return Err(StoreError::NotFound(format!("{table}/{id}")));
            }
            None
        }
    };
    let value = match value {
        Some(v) => {
            if !v.is_object() {
                return Err(StoreError::Invalid("a record must be a JSON object".into()));
            }
            if let Some(schema) = schema {
                schema.validate(&v).map_err(StoreError::Invalid)?;
            }
            // Here rather than in each protocol, so REST, WebSocket and MQTT writes
            // cannot disagree about what a valid sign is.
            Some(normalize(table, v)?)
        }
        None => None,
    };
    // A re-created record continues after the version it was deleted at, so
    // an ETag of one record id never names two different records.
    let version = match current {
        Some(record) => record.version + 1,
        None => deleted_at()? + 1,
    };
    Ok(Effect {
        created: current.is_none() && value.is_some(),
        value,
        version,
    })
}

#[cfg(test)]
mod tests {
    use app::event::Origin;
    use serde_json::json;

    use super::*;

    fn record(version: u64, value: Value) -> StoredRecord {
        StoredRecord {
            version,
            seq: 7,
            ts: String::new(),
            origin: Origin::Rest,
            value,
        }
    }

    fn intent(kind: ChangeType, input: Option<Value>, if_match: Option<u64>) -> Intent<'static> {
        Intent {
            kind,
            table: "mqtt",
            id: "a",
            input,
            if_match,
        }
    }

    fn never_deleted() -> Result<u64, StoreError> {
        Ok(0)
    }

    #[test]
    fn a_record_recreated_after_a_delete_continues_its_versions() {
        let put = intent(ChangeType::Put, Some(json!({"x": 1})), None);
        let effect = decide(put, None, || Ok(4), None).unwrap();
        assert_eq!((effect.version, effect.created), (5, true));

        let existing = record(2, json!({"x": 1}));
        let put = intent(ChangeType::Put, Some(json!({"x": 2})), None);
        let effect = decide(
            put,
            Some(&existing),
            || panic!("only read for a missing record"),
            None,
        )
        .unwrap();
        assert_eq!((effect.version, effect.created), (3, false));
    }

    #[test]
    fn a_patch_merges_into_the_current_value_and_needs_one() {
        let existing = record(1, json!({"x": 1, "y": 2}));
        let patch = intent(ChangeType::Patch, Some(json!({"y": null, "z": 3})), None);
        let effect = decide(patch, Some(&existing), never_deleted, None).unwrap();
        assert_eq!(effect.value, Some(json!({"x": 1, "z": 3})));

        let patch = intent(ChangeType::Patch, Some(json!({"y": 1})), None);
        let missing = decide(patch, None, never_deleted, None);
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
    }

    #[test]
    fn if_match_names_the_version_and_zero_means_absent() {
        let existing = record(3, json!({}));
        let stale = intent(ChangeType::Put, Some(json!({})), Some(2));
        let refused = decide(stale, Some(&existing), never_deleted, None);
        assert!(matches!(
            refused,
            Err(StoreError::VersionMismatch {
                expected: 2,
                current: 3
            })
        ));
        let create_only = intent(ChangeType::Put, Some(json!({})), Some(0));
        assert!(decide(create_only, None, never_deleted, None).is_ok());
        let create_only = intent(ChangeType::Put, Some(json!({})), Some(0));
        assert!(decide(create_only, Some(&existing), never_deleted, None).is_err());
    }

    #[test]
    fn a_delete_needs_a_record_and_leaves_no_value() {
        let existing = record(3, json!({}));
        let delete = intent(ChangeType::Delete, None, None);
        let effect = decide(delete, Some(&existing), never_deleted, None).unwrap();
        assert_eq!(
            (effect.value, effect.version, effect.created),
            (None, 4, false)
        );
        let delete = intent(ChangeType::Delete, None, None);
        assert!(matches!(
            decide(delete, None, never_deleted, None),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_value_must_be_an_object() {
        let put = intent(ChangeType::Put, Some(json!([1])), None);
        assert!(matches!(
            decide(put, None, never_deleted, None),
            Err(StoreError::Invalid(_))
        ));
    }
}

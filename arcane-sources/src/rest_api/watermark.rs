//! The source's position ([`RestApiPosition`]) and how record watermarks compare ([`Key`]).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::WatermarkKind;

/// Where the REST API source is, stored in the sink's commit manifest.
///
/// Incremental mode: the watermark of the last record landed and, with `idField`, the ids of
/// the records landed at exactly that watermark. Without a watermark (a one-off backfill):
/// the number of records landed from the start of the pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestApiPosition {
    /// The last watermark landed (the JSON value as the API returned it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Value>,
    /// Ids of the records landed at exactly `watermark`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Value>,
    /// Without a watermark: records landed since the start of the pass.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A watermark value in comparable form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    /// Nanoseconds since the epoch.
    Time(i128),
    /// An integer.
    Int(i128),
    /// A decimal.
    Float(f64),
    /// A string.
    Str(String),
}

impl Key {
    /// The comparable form of `value` under `kind`, or `None` if it is not such a value.
    pub(crate) fn of(value: &Value, kind: WatermarkKind) -> Option<Self> {
        match (kind, value) {
            (WatermarkKind::Timestamp, Value::String(s)) => {
                let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
                Some(Self::Time(
                    i128::from(t.timestamp()) * 1_000_000_000
                        + i128::from(t.timestamp_subsec_nanos()),
                ))
            }
            // Epoch numbers: seconds, milliseconds, microseconds or nanoseconds all compare
            // correctly among themselves as long as one API uses one unit.
            (WatermarkKind::Timestamp, Value::Number(n)) => {
                n.as_i64().map(|v| Self::Time(v.into()))
            }
            (WatermarkKind::Number, Value::Number(n)) => n
                .as_i64()
                .map(|v| Self::Int(v.into()))
                .or_else(|| n.as_u64().map(|v| Self::Int(v.into())))
                .or_else(|| n.as_f64().map(Self::Float)),
            (WatermarkKind::String, Value::String(s)) => Some(Self::Str(s.clone())),
            _ => None,
        }
    }

    pub(crate) fn compare(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Time(a), Self::Time(b)) | (Self::Int(a), Self::Int(b)) => a.cmp(b),
            (Self::Float(a), Self::Float(b)) => a.total_cmp(b),
            (Self::Int(a), Self::Float(b)) => (*a as f64).total_cmp(b),
            (Self::Float(a), Self::Int(b)) => a.total_cmp(&(*b as f64)),
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            // Different kinds cannot be produced under one WatermarkKind.
            _ => Ordering::Equal,
        }
    }
}

/// The text `{{watermark}}` is replaced by.
pub(crate) fn template_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Read `field` of `record`: a JSON pointer when it starts with `/`, else a top-level key.
pub(crate) fn field<'a>(record: &'a Value, field: &str) -> Option<&'a Value> {
    if field.starts_with('/') {
        record.pointer(field)
    } else {
        record.get(field)
    }
    .filter(|v| !v.is_null())
}

/// What to do with one record of a poll.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Land it.
    Take,
    /// Landed before (at or before the poll's starting watermark): skip it silently.
    Seen,
    /// It cannot be placed: dead-letter it with this reason.
    Reject(String),
}

/// The running watermark state of an incremental poll.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    kind: WatermarkKind,
    field: String,
    id_field: Option<String>,
    /// The state when the poll started (what the API was asked from).
    start: Option<Key>,
    start_ids: Vec<Value>,
    /// Whether records at exactly `start` were landed before (restart or an earlier poll):
    /// false only for a configured lower bound before any record.
    start_seen: bool,
    /// The running state.
    current: Option<(Key, Value)>,
    ids: Vec<Value>,
}

impl Tracker {
    pub(crate) fn new(
        kind: WatermarkKind,
        field: String,
        id_field: Option<String>,
        position: Option<&RestApiPosition>,
        lower_bound: Option<&Value>,
    ) -> Self {
        let (current, ids, seen) =
            match position.and_then(|p| p.watermark.clone().map(|w| (w, p.ids.clone()))) {
                Some((w, ids)) => (Key::of(&w, kind).map(|k| (k, w)), ids, true),
                None => (
                    lower_bound.and_then(|w| Key::of(w, kind).map(|k| (k, w.clone()))),
                    Vec::new(),
                    false,
                ),
            };
        let mut t = Self {
            kind,
            field,
            id_field,
            start: None,
            start_ids: Vec::new(),
            start_seen: seen,
            current,
            ids,
        };
        t.begin_poll();
        t
    }

    /// A new poll asks from the running state.
    pub(crate) fn begin_poll(&mut self) {
        self.start = self.current.as_ref().map(|(k, _)| k.clone());
        self.start_ids = self.ids.clone();
    }

    /// The watermark to put in `{{watermark}}`.
    pub(crate) fn watermark(&self) -> Option<&Value> {
        self.current.as_ref().map(|(_, v)| v)
    }

    /// Judge `record` without changing the state.
    pub(crate) fn judge(&self, record: &Value) -> (Verdict, Option<Key>) {
        let Some(raw) = field(record, &self.field) else {
            return (
                Verdict::Reject(format!("the watermark field \"{}\" is missing", self.field)),
                None,
            );
        };
        let Some(key) = Key::of(raw, self.kind) else {
            return (
                Verdict::Reject(format!(
                    "the watermark field \"{}\" is {raw}, not a {} watermark",
                    self.field,
                    self.kind.as_str()
                )),
                None,
            );
        };
        if let Some(start) = &self.start {
            match key.compare(start) {
                Ordering::Less => return (Verdict::Seen, Some(key)),
                Ordering::Equal if self.start_seen => {
                    let seen = match &self.id_field {
                        None => true,
                        Some(id) => field(record, id).is_some_and(|v| self.start_ids.contains(v)),
                    };
                    if seen {
                        return (Verdict::Seen, Some(key));
                    }
                }
                _ => {}
            }
        }
        if let Some((current, value)) = &self.current {
            if key.compare(current) == Ordering::Less {
                return (
                    Verdict::Reject(format!(
                        "the watermark {raw} is before the preceding record's {value}; the API must return records in ascending \"{}\" order",
                        self.field
                    )),
                    Some(key),
                );
            }
        }
        (Verdict::Take, Some(key))
    }

    /// Advance the state over a record judged with `key` (landed or dead-lettered).
    pub(crate) fn advance(&mut self, record: &Value, key: Key) {
        let raw = field(record, &self.field).cloned().unwrap_or(Value::Null);
        let id = self
            .id_field
            .as_ref()
            .and_then(|f| field(record, f).cloned());
        match self.current.as_ref().map(|(k, _)| key.compare(k)) {
            None | Some(Ordering::Greater) => {
                self.current = Some((key, raw));
                self.ids.clear();
                self.ids.extend(id);
            }
            Some(Ordering::Equal) => self.ids.extend(id),
            Some(Ordering::Less) => {}
        }
        // Once a record at the poll's starting watermark is landed, equal ones are "seen"
        // for the next poll (tracked through `ids` when there is an id field).
        self.start_seen = true;
    }

    /// The position after the records advanced over so far.
    pub(crate) fn position(&self) -> RestApiPosition {
        RestApiPosition {
            watermark: self.watermark().cloned(),
            ids: if self.id_field.is_some() {
                self.ids.clone()
            } else {
                Vec::new()
            },
            records: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn timestamps_compare_as_instants_and_numbers_as_numbers() {
        let a = Key::of(
            &json!("2026-11-25T10:00:00+01:00"),
            WatermarkKind::Timestamp,
        )
        .unwrap();
        let b = Key::of(&json!("2026-11-25T09:30:00Z"), WatermarkKind::Timestamp).unwrap();
        assert_eq!(a.compare(&b), Ordering::Less);
        let c = Key::of(&json!(10), WatermarkKind::Number).unwrap();
        let d = Key::of(&json!(9.5), WatermarkKind::Number).unwrap();
        assert_eq!(c.compare(&d), Ordering::Greater);
        assert!(Key::of(&json!("x"), WatermarkKind::Number).is_none());
        assert!(Key::of(&json!("not a time"), WatermarkKind::Timestamp).is_none());
    }

    #[test]
    fn records_at_the_boundary_are_skipped_by_id_and_the_rest_taken() {
        let pos = RestApiPosition {
            watermark: Some(json!(5)),
            ids: vec![json!("a")],
            records: 0,
        };
        let t = Tracker::new(
            WatermarkKind::Number,
            "w".into(),
            Some("id".into()),
            Some(&pos),
            None,
        );
        assert_eq!(t.judge(&json!({"w": 4, "id": "z"})).0, Verdict::Seen);
        assert_eq!(t.judge(&json!({"w": 5, "id": "a"})).0, Verdict::Seen);
        assert_eq!(t.judge(&json!({"w": 5, "id": "b"})).0, Verdict::Take);
        assert_eq!(t.judge(&json!({"w": 6, "id": "a"})).0, Verdict::Take);
        assert!(matches!(t.judge(&json!({"id": "a"})).0, Verdict::Reject(_)));

        // Without ids, the boundary is exclusive once something was landed...
        let t = Tracker::new(WatermarkKind::Number, "w".into(), None, Some(&pos), None);
        assert_eq!(t.judge(&json!({"w": 5})).0, Verdict::Seen);
        // ...but a configured lower bound is inclusive.
        let t = Tracker::new(
            WatermarkKind::Number,
            "w".into(),
            None,
            None,
            Some(&json!(5)),
        );
        assert_eq!(t.judge(&json!({"w": 5})).0, Verdict::Take);
        assert_eq!(t.judge(&json!({"w": 4})).0, Verdict::Seen);
    }

    #[test]
    fn the_state_advances_to_the_highest_watermark_with_its_ids() {
        let mut t = Tracker::new(
            WatermarkKind::Number,
            "w".into(),
            Some("id".into()),
            None,
            None,
        );
        for (w, id) in [(1, "a"), (2, "b"), (2, "c")] {
            let r = json!({"w": w, "id": id});
            let (v, k) = t.judge(&r);
            assert_eq!(v, Verdict::Take);
            t.advance(&r, k.unwrap());
        }
        // Out of order within a poll: dead-lettered, not silently lost on a restart.
        assert!(matches!(
            t.judge(&json!({"w": 1, "id": "x"})).0,
            Verdict::Reject(_)
        ));
        assert_eq!(
            t.position(),
            RestApiPosition {
                watermark: Some(json!(2)),
                ids: vec![json!("b"), json!("c")],
                records: 0
            }
        );
        t.begin_poll();
        assert_eq!(t.judge(&json!({"w": 2, "id": "c"})).0, Verdict::Seen);
        assert_eq!(t.judge(&json!({"w": 2, "id": "d"})).0, Verdict::Take);
    }
}

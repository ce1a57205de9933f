//! The source's position ([`RestApiPosition`]) and how record watermarks compare ([`Key`]).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::WatermarkKind;

/// Where the REST API source is, stored in the sink's commit manifest.
///
/// A *pass* is one poll: the first page, asked from the watermark of the passes before it,
/// and every page after it. Between passes, the position is the highest watermark consumed
/// and, with `idField`, the ids of the records consumed at exactly that watermark; the next
/// pass asks from it. Inside a pass, the position also holds [`pass`](Self::pass): where the
/// pass started, its next page and how many of its records were consumed, so a restart goes
/// on with the same pass, whatever order the API returns the records in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestApiPosition {
    /// The highest watermark consumed (the JSON value as the API returned it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Value>,
    /// Ids of the records consumed at exactly `watermark`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Value>,
    /// Positions written before passes were tracked, without a watermark: the good records
    /// landed since the start of the pass. Read for compatibility, no longer written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records: u64,
    /// Inside a pass (absent between passes, and inside a pass paged by number or offset
    /// while its records came in ascending watermark order: a restart then asks from
    /// `watermark`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<PassPosition>,
}

/// How far a pass got: see [`RestApiPosition`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassPosition {
    /// The watermark the pass asked from (`None`: from the beginning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Value>,
    /// The ids at exactly that watermark consumed before the pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<Value>,
    /// Records at exactly `watermark` are new to this pass (it starts at a configured
    /// `watermark.start` before anything was landed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub inclusive: bool,
    /// The pages of the pass read so far.
    #[serde(default)]
    pub pages: u64,
    /// The next page: the cursor, page number or offset sent for it, or its URL (next-URL and
    /// `Link` pagination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Value>,
    /// Records of the pass consumed so far (landed, dead-lettered, or skipped as landed
    /// before), counted in the order the API returned them: a restart that cannot ask for
    /// `next` reads the pass again from its start and skips them.
    #[serde(default)]
    pub records: u64,
    /// The `idField` value of the last record consumed, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<Value>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
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

/// What to do with one record of a pass.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Land it.
    Take,
    /// Landed before (before the pass's starting watermark, or consumed before a restart):
    /// skip it silently.
    Seen,
    /// It cannot be placed: dead-letter it with this reason.
    Reject(String),
}

/// The records of a pass consumed before a restart, still to be skipped.
#[derive(Debug, Clone)]
struct Prefix {
    /// How many more records to skip at most.
    left: u64,
    /// The id of the last record consumed before the restart: the prefix ends with it.
    last_id: Option<Value>,
    /// The highest watermark consumed before the restart, and the ids consumed at it.
    max: Option<Key>,
    ids: Vec<Value>,
    /// The position restarted from.
    position: RestApiPosition,
}

/// The watermark state of the source: where the current pass started, the highest watermark
/// consumed, and how far the pass got.
///
/// Records are judged against the pass's start only, so their order within a pass does not
/// matter. The next pass asks from the highest watermark of the completed pass.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    kind: WatermarkKind,
    field: String,
    id_field: Option<String>,
    /// A restart inside a pass that came in ascending order asks from the highest watermark
    /// (pagination by number or offset, whose pages are not worth keeping across a restart).
    resume_from_max: bool,
    /// What the pass asked from.
    start: Option<(Key, Value)>,
    start_ids: Vec<Value>,
    /// Whether records at exactly `start` were landed before (restart or an earlier pass):
    /// false only for a configured lower bound before any record.
    start_seen: bool,
    /// The highest watermark consumed, and the ids consumed at it.
    current: Option<(Key, Value)>,
    ids: Vec<Value>,
    /// Records of this pass consumed, and the id of the last one.
    consumed: u64,
    last_id: Option<Value>,
    /// Every record of this pass so far came in ascending watermark order.
    in_order: bool,
    /// Something was landed since the start (or before a restart).
    landed: bool,
    /// The position restarted from, while it is inside a pass.
    resumed: Option<RestApiPosition>,
    /// After [`Tracker::read_pass_again`]: the records consumed before the restart.
    prefix: Option<Prefix>,
}

impl Tracker {
    pub(crate) fn new(
        kind: WatermarkKind,
        field: String,
        id_field: Option<String>,
        resume_from_max: bool,
        position: Option<&RestApiPosition>,
        lower_bound: Option<&Value>,
    ) -> Self {
        let of = |w: &Value| Key::of(w, kind).map(|k| (k, w.clone()));
        let mut t = Self {
            kind,
            field,
            id_field,
            resume_from_max,
            start: None,
            start_ids: Vec::new(),
            start_seen: false,
            current: None,
            ids: Vec::new(),
            consumed: 0,
            last_id: None,
            in_order: true,
            landed: false,
            resumed: None,
            prefix: None,
        };
        match position {
            Some(p) if p.watermark.is_some() || p.pass.is_some() => {
                t.current = p.watermark.as_ref().and_then(of);
                t.ids = p.ids.clone();
                t.landed = true;
                match &p.pass {
                    // Inside a pass: go on with it.
                    Some(pass) => {
                        t.start = pass.watermark.as_ref().and_then(of);
                        t.start_ids = pass.ids.clone();
                        t.start_seen = !pass.inclusive;
                        t.in_order = false;
                        t.consumed = pass.records;
                        t.last_id = pass.last_id.clone();
                        t.resumed = Some(p.clone());
                    }
                    None => {
                        t.start = t.current.clone();
                        t.start_ids = t.ids.clone();
                        t.start_seen = true;
                    }
                }
            }
            _ => {
                t.start = lower_bound.and_then(of);
                t.current = t.start.clone();
            }
        }
        t
    }

    /// The watermark to put in `{{watermark}}`: the start of the pass.
    pub(crate) fn watermark(&self) -> Option<&Value> {
        self.start.as_ref().map(|(_, v)| v)
    }

    /// Something was landed (so a position is worth keeping).
    pub(crate) fn has_landed(&self) -> bool {
        self.landed
    }

    /// Inside the records consumed before a restart.
    pub(crate) fn in_prefix(&self) -> bool {
        self.prefix.is_some()
    }

    /// The restart's next page cannot be read: the pass is read again from its start, and the
    /// records consumed before the restart are skipped (see [`Tracker::consume`]).
    pub(crate) fn read_pass_again(&mut self) {
        let Some(p) = self.resumed.take() else {
            return;
        };
        let Some(pass) = &p.pass else {
            return;
        };
        self.consumed = 0;
        self.last_id = None;
        if pass.records > 0 {
            self.prefix = Some(Prefix {
                left: pass.records,
                last_id: pass.last_id.clone(),
                max: self.current.as_ref().map(|(k, _)| k.clone()),
                ids: self.ids.clone(),
                position: p.clone(),
            });
        }
    }

    /// Whether `key` (of a record with `id`) is at or below what was consumed before the
    /// restart: below its highest watermark, or at it with an id consumed there (any record
    /// at it without `idField`).
    fn consumed_before(&self, prefix: &Prefix, key: &Key, id: Option<&Value>) -> bool {
        let Some(max) = &prefix.max else {
            return false;
        };
        match key.compare(max) {
            Ordering::Less => true,
            Ordering::Equal => match &self.id_field {
                None => true,
                Some(_) => id.is_some_and(|id| prefix.ids.contains(id)),
            },
            Ordering::Greater => false,
        }
    }

    /// Judge the next record of the pass and account for it.
    pub(crate) fn consume(&mut self, record: &Value) -> Verdict {
        self.consumed += 1;
        let id = self
            .id_field
            .as_ref()
            .and_then(|f| field(record, f).cloned());
        self.last_id = id.clone();
        let raw = field(record, &self.field);
        let key = raw.and_then(|r| Key::of(r, self.kind));
        if let Some(prefix) = &self.prefix {
            // Consumed before the restart: skip what is at or below what was consumed then
            // (a record changed since, now above it, is new), up to the last record consumed
            // then, or as many records as were consumed then.
            let seen = key
                .as_ref()
                .is_none_or(|k| self.consumed_before(prefix, k, id.as_ref()));
            let is_last = prefix.last_id.is_some() && id.is_some() && prefix.last_id == id;
            let left = prefix.left - u64::from(seen);
            if is_last || left == 0 {
                self.prefix = None;
            } else if let Some(p) = &mut self.prefix {
                p.left = left;
            }
            if seen {
                return Verdict::Seen;
            }
        }
        let Some(raw) = raw else {
            return Verdict::Reject(format!("the watermark field \"{}\" is missing", self.field));
        };
        let Some(key) = key else {
            return Verdict::Reject(format!(
                "the watermark field \"{}\" is {raw}, not a {} watermark",
                self.field,
                self.kind.as_str()
            ));
        };
        if let Some((start, _)) = &self.start {
            match key.compare(start) {
                Ordering::Less => return Verdict::Seen,
                Ordering::Equal if self.start_seen => {
                    let seen = match &self.id_field {
                        None => true,
                        Some(_) => id.as_ref().is_some_and(|v| self.start_ids.contains(v)),
                    };
                    if seen {
                        return Verdict::Seen;
                    }
                }
                _ => {}
            }
        }
        let raw = raw.clone();
        match self.current.as_ref().map(|(k, _)| key.compare(k)) {
            None | Some(Ordering::Greater) => {
                self.current = Some((key, raw));
                self.ids.clear();
                self.ids.extend(id);
            }
            Some(Ordering::Equal) => self.ids.extend(id),
            Some(Ordering::Less) => self.in_order = false,
        }
        self.landed = true;
        Verdict::Take
    }

    /// The pass read its last page: the next one asks from the highest watermark consumed.
    pub(crate) fn complete_pass(&mut self) {
        self.start = self.current.clone();
        self.start_ids = self.ids.clone();
        self.start_seen = self.start_seen || self.landed;
        self.consumed = 0;
        self.last_id = None;
        self.in_order = true;
        self.resumed = None;
        self.prefix = None;
    }

    /// The position after the records consumed so far; inside a pass, its `next` and `pages`
    /// are the caller's to fill in.
    pub(crate) fn position(&self) -> RestApiPosition {
        if let Some(prefix) = &self.prefix {
            // Still inside what was consumed before the restart: nothing new is covered yet
            // (the source holds back records taken here until the prefix ends).
            return prefix.position.clone();
        }
        let between_passes = self.consumed == 0;
        let from_max = self.resume_from_max && self.in_order;
        let pass = (!between_passes && !from_max).then(|| PassPosition {
            watermark: self.watermark().cloned(),
            ids: if self.id_field.is_some() {
                self.start_ids.clone()
            } else {
                Vec::new()
            },
            inclusive: !self.start_seen,
            records: self.consumed,
            last_id: self.last_id.clone(),
            ..PassPosition::default()
        });
        RestApiPosition {
            watermark: self.current.as_ref().map(|(_, v)| v.clone()),
            ids: if self.id_field.is_some() {
                self.ids.clone()
            } else {
                Vec::new()
            },
            records: 0,
            pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tracker(id_field: Option<&str>, position: Option<&RestApiPosition>) -> Tracker {
        Tracker::new(
            WatermarkKind::Number,
            "w".into(),
            id_field.map(str::to_string),
            false,
            position,
            None,
        )
    }

    /// A tracker restarted from `position` whose next page could not be read.
    fn again(position: &RestApiPosition) -> Tracker {
        let mut t = tracker(Some("id"), Some(position));
        t.read_pass_again();
        t
    }

    fn rec(w: i64, id: &str) -> Value {
        json!({"w": w, "id": id})
    }

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
            ..RestApiPosition::default()
        };
        let mut t = tracker(Some("id"), Some(&pos));
        assert_eq!(t.watermark(), Some(&json!(5)));
        assert_eq!(t.consume(&rec(4, "z")), Verdict::Seen);
        assert_eq!(t.consume(&rec(5, "a")), Verdict::Seen);
        assert_eq!(t.consume(&rec(5, "b")), Verdict::Take);
        assert_eq!(t.consume(&rec(6, "a")), Verdict::Take);
        assert!(matches!(t.consume(&json!({"id": "a"})), Verdict::Reject(_)));

        // Without ids, the boundary is exclusive once something was landed...
        let mut t = tracker(None, Some(&pos));
        assert_eq!(t.consume(&json!({"w": 5})), Verdict::Seen);
        // ...but a configured lower bound is inclusive.
        let mut t = Tracker::new(
            WatermarkKind::Number,
            "w".into(),
            None,
            false,
            None,
            Some(&json!(5)),
        );
        assert_eq!(t.consume(&json!({"w": 5})), Verdict::Take);
        assert_eq!(t.consume(&json!({"w": 4})), Verdict::Seen);
    }

    #[test]
    fn order_within_a_pass_does_not_matter_and_the_next_pass_asks_from_its_maximum() {
        let mut t = tracker(Some("id"), None);
        for (w, id) in [(2, "b"), (1, "a"), (3, "c"), (2, "d"), (3, "e")] {
            assert_eq!(t.consume(&rec(w, id)), Verdict::Take, "{w} {id}");
        }
        // Inside the pass: where it started and how many records it consumed.
        let inside = t.position();
        assert_eq!(inside.watermark, Some(json!(3)));
        assert_eq!(inside.ids, vec![json!("c"), json!("e")]);
        let pass = inside.pass.clone().unwrap();
        assert_eq!((pass.watermark, pass.records), (None, 5));
        assert_eq!(pass.last_id, Some(json!("e")));
        // Between passes: the maximum and its ids; the next pass asks from there.
        t.complete_pass();
        let between = t.position();
        assert_eq!(
            between,
            RestApiPosition {
                watermark: Some(json!(3)),
                ids: vec![json!("c"), json!("e")],
                ..RestApiPosition::default()
            }
        );
        assert_eq!(t.watermark(), Some(&json!(3)));
        assert_eq!(t.consume(&rec(3, "c")), Verdict::Seen);
        assert_eq!(t.consume(&rec(3, "f")), Verdict::Take);
        assert_eq!(t.consume(&rec(1, "a")), Verdict::Seen);
        // The position survives serde, and old positions still read.
        let text = serde_json::to_string(&inside).unwrap();
        assert_eq!(
            serde_json::from_str::<RestApiPosition>(&text).unwrap(),
            inside
        );
        let old: RestApiPosition =
            serde_json::from_value(json!({"watermark": 3, "ids": ["c"]})).unwrap();
        assert_eq!(old.pass, None);
    }

    #[test]
    fn a_restart_inside_a_pass_goes_on_with_it_or_reads_it_again_skipping_what_it_consumed() {
        // A pass out of order: consumed b, a, c; then a crash.
        let mut t = tracker(Some("id"), None);
        for (w, id) in [(5, "b"), (2, "a"), (7, "c")] {
            assert_eq!(t.consume(&rec(w, id)), Verdict::Take);
        }
        let pos = t.position();
        // Going on with the pass (its next page): from where it started, with its count.
        let mut r = tracker(Some("id"), Some(&pos));
        assert_eq!(r.watermark(), None);
        assert_eq!(r.consume(&rec(1, "d")), Verdict::Take);
        let p = r.position();
        assert_eq!(p.watermark, Some(json!(7)));
        assert_eq!(p.pass.unwrap().records, 4);

        // Reading it again: its first three records are skipped, the rest taken even below
        // the maximum.
        let mut r = again(&pos);
        assert_eq!(r.watermark(), None);
        for (w, id, v) in [
            (5, "b", Verdict::Seen),
            (2, "a", Verdict::Seen),
            (7, "c", Verdict::Seen),
            (1, "d", Verdict::Take),
            (6, "e", Verdict::Take),
        ] {
            assert_eq!(r.consume(&rec(w, id)), v, "{id}");
        }

        // The data changed before the restart: "a" got a newer version (now above the
        // maximum) and "x" appeared with a new watermark before "c": both are new; "b" and
        // "c" are still skipped, and what follows "c" is taken.
        let mut r = again(&pos);
        for (w, id, v) in [
            (5, "b", Verdict::Seen),
            (9, "a", Verdict::Take),
            (9, "x", Verdict::Take),
            (7, "c", Verdict::Seen),
            (1, "d", Verdict::Take),
        ] {
            assert_eq!(r.consume(&rec(w, id)), v, "{id}");
        }
        // A record changed to a watermark between the old maximum and a newer one taken in
        // the prefix is still new.
        let mut r = again(&pos);
        assert_eq!(r.consume(&rec(9, "a")), Verdict::Take);
        assert!(r.in_prefix());
        // Inside the skipped records the position is still the one restarted from.
        assert_eq!(r.position(), pos);
        assert_eq!(r.consume(&rec(8, "y")), Verdict::Take);
        assert_eq!(r.consume(&rec(5, "b")), Verdict::Seen);
        assert_eq!(r.consume(&rec(7, "c")), Verdict::Seen);
        assert!(!r.in_prefix());
        let p = r.position().pass.unwrap();
        assert_eq!((p.records, p.last_id), (4, Some(json!("c"))));
    }

    #[test]
    fn pages_by_number_keep_the_running_maximum_until_the_pass_goes_out_of_order() {
        let mut t = Tracker::new(
            WatermarkKind::Number,
            "w".into(),
            Some("id".into()),
            true,
            None,
            None,
        );
        t.consume(&rec(1, "a"));
        t.consume(&rec(2, "b"));
        assert_eq!(t.position().pass, None);
        assert_eq!(t.position().watermark, Some(json!(2)));
        t.consume(&rec(1, "c"));
        let pass = t.position().pass.unwrap();
        assert_eq!(pass.records, 3);
    }
}

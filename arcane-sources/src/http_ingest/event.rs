//! Requests into events: CloudEvents 1.0 over HTTP (structured, binary and batch modes) and
//! plain JSON / NDJSON webhook bodies.

use hyper::HeaderMap;
use serde_json::{Map, Value};

/// The CloudEvents attributes with their own column; any other attribute is an extension.
const KNOWN_ATTRIBUTES: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// How a request body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `application/cloudevents+json`: one event, attributes and data in the JSON body.
    Structured,
    /// `application/cloudevents-batch+json`: a JSON array of structured events.
    Batch,
    /// `ce-*` headers carry the attributes, the body is the data.
    Binary,
    /// `application/json`: one JSON object or an array of objects.
    Json,
    /// `application/x-ndjson`: one JSON object per line.
    Ndjson,
}

impl Mode {
    /// The mode of a request, from its `Content-Type` and `ce-specversion` header; an error
    /// (for the 415 answer) for a content type no mode accepts.
    pub(crate) fn of(headers: &HeaderMap) -> Result<Self, String> {
        let content_type = media_type(headers);
        match content_type.as_deref() {
            Some("application/cloudevents+json") => Ok(Self::Structured),
            Some("application/cloudevents-batch+json") => Ok(Self::Batch),
            _ if headers.contains_key("ce-specversion") => Ok(Self::Binary),
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
                Ok(Self::Ndjson)
            }
            Some(t) if t == "application/json" || t.ends_with("+json") => Ok(Self::Json),
            Some(t) => Err(format!(
                "Content-Type {t} is not accepted; send application/cloudevents+json, application/cloudevents-batch+json, a binary-mode CloudEvent (ce-* headers), application/json or application/x-ndjson"
            )),
            None => Err("Content-Type is missing; send application/cloudevents+json, application/cloudevents-batch+json, a binary-mode CloudEvent (ce-* headers), application/json or application/x-ndjson".into()),
        }
    }

    /// Whether the events are CloudEvents (with required attributes).
    pub(crate) fn is_cloudevents(self) -> bool {
        matches!(self, Self::Structured | Self::Batch | Self::Binary)
    }
}

/// The media type of the request (`type/subtype`, lower case, without parameters).
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(hyper::header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

/// An event's data.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Data {
    /// No data.
    #[default]
    None,
    /// JSON (a structured event's `data`, a JSON binary-mode body, a webhook object).
    Json(Value),
    /// Text of a non-JSON binary-mode body.
    Text(String),
    /// A structured event's `data_base64`, kept as base64.
    Base64(String),
}

/// One event of a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) ty: Option<String>,
    pub(crate) subject: Option<String>,
    /// Milliseconds since the epoch (`time` parsed from RFC 3339).
    pub(crate) time: Option<i64>,
    pub(crate) datacontenttype: Option<String>,
    pub(crate) dataschema: Option<String>,
    /// The extension attributes.
    pub(crate) extensions: Option<Map<String, Value>>,
    pub(crate) data: Data,
}

/// An event (or body) that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// The event's index in the request (0 for a body that is not readable at all).
    pub(crate) index: usize,
    /// What is wrong, naming the field.
    pub(crate) reason: String,
    /// The record (or its start), for the dead letter.
    pub(crate) payload: String,
}

/// What a request body holds.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Events in request order, each valid or not.
    pub(crate) events: Vec<Result<Event, Invalid>>,
}

impl Parsed {
    fn whole_body(reason: String, body: &[u8]) -> Self {
        Self {
            events: vec![Err(Invalid {
                index: 0,
                reason,
                payload: String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned(),
            })],
        }
    }
}

/// Read the events of a request. `idempotency_header` is the (lower-case) header naming a
/// webhook request.
pub(crate) fn parse(
    mode: Mode,
    headers: &HeaderMap,
    body: &[u8],
    idempotency_header: &str,
) -> Parsed {
    match mode {
        Mode::Structured => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(obj)) => Parsed {
                events: vec![structured(obj, 0)],
            },
            Ok(_) => Parsed::whole_body(
                "body: expected a JSON object (a structured-mode CloudEvent)".into(),
                body,
            ),
            Err(e) => Parsed::whole_body(format!("body: malformed JSON ({e})"), body),
        },
        Mode::Batch => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => Parsed {
                events: items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::Object(obj) => structured(obj, i),
                        other => Err(Invalid {
                            index: i,
                            reason: format!("[{i}]: expected a JSON object (a CloudEvent)"),
                            payload: other.to_string(),
                        }),
                    })
                    .collect(),
            },
            Ok(_) => Parsed::whole_body(
                "body: expected a JSON array of CloudEvents (batch mode)".into(),
                body,
            ),
            Err(e) => Parsed::whole_body(format!("body: malformed JSON ({e})"), body),
        },
        Mode::Binary => Parsed {
            events: vec![binary(headers, body)],
        },
        Mode::Json => {
            let key = idempotency_key(headers, idempotency_header);
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Array(items)) => Parsed {
                    events: items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| webhook(item, i, key.as_deref(), true))
                        .collect(),
                },
                Ok(item @ Value::Object(_)) => Parsed {
                    events: vec![webhook(item, 0, key.as_deref(), false)],
                },
                Ok(_) => Parsed::whole_body(
                    "body: expected a JSON object or an array of objects".into(),
                    body,
                ),
                Err(e) => Parsed::whole_body(format!("body: malformed JSON ({e})"), body),
            }
        }
        Mode::Ndjson => {
            let key = idempotency_key(headers, idempotency_header);
            let mut events = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let i = events.len();
                events.push(match serde_json::from_slice::<Value>(line) {
                    Ok(item) => webhook(item, i, key.as_deref(), true),
                    Err(e) => Err(Invalid {
                        index: i,
                        reason: format!("line {}: malformed JSON ({e})", i + 1),
                        payload: String::from_utf8_lossy(line).into_owned(),
                    }),
                });
            }
            Parsed { events }
        }
    }
}

fn idempotency_key(headers: &HeaderMap, header: &str) -> Option<String> {
    headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A webhook JSON object; with an idempotency key, its id is the key (`KEY:INDEX` in an array).
fn webhook(item: Value, index: usize, key: Option<&str>, in_list: bool) -> Result<Event, Invalid> {
    if !item.is_object() {
        return Err(Invalid {
            index,
            reason: format!("[{index}]: expected a JSON object"),
            payload: item.to_string(),
        });
    }
    Ok(Event {
        id: key.map(|k| {
            if in_list {
                format!("{k}:{index}")
            } else {
                k.to_string()
            }
        }),
        data: Data::Json(item),
        ..Event::default()
    })
}

/// A structured-mode event (also an element of a batch).
fn structured(mut obj: Map<String, Value>, index: usize) -> Result<Event, Invalid> {
    let invalid = |reason: String, obj: &Map<String, Value>| Invalid {
        index,
        reason,
        payload: Value::Object(obj.clone()).to_string(),
    };
    let at = |name: &str| format!("[{index}].{name}");
    let original = obj.clone();
    let mut attr = |name: &str, required: bool| -> Result<Option<String>, String> {
        match obj.remove(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(Value::String(_)) if required => {
                Err(format!("{}: required attribute is empty", at(name)))
            }
            Some(Value::String(_)) | Some(Value::Null) | None if !required => Ok(None),
            None | Some(Value::Null) => Err(format!("{}: required attribute is missing", at(name))),
            Some(other) => Err(format!("{}: expected a string, found {other}", at(name))),
        }
    };
    let parsed = (|| {
        let specversion = attr("specversion", true)?;
        let id = attr("id", true)?;
        let source = attr("source", true)?;
        let ty = attr("type", true)?;
        let subject = attr("subject", false)?;
        let time = attr("time", false)?;
        let datacontenttype = attr("datacontenttype", false)?;
        let dataschema = attr("dataschema", false)?;
        Ok::<_, String>((
            specversion,
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
        ))
    })();
    let (specversion, id, source, ty, subject, time, datacontenttype, dataschema) =
        parsed.map_err(|reason| invalid(reason, &original))?;
    check_specversion(specversion.as_deref(), &at("specversion"))
        .map_err(|reason| invalid(reason, &original))?;
    let time = parse_time(time.as_deref(), &at("time")).map_err(|r| invalid(r, &original))?;
    let data = match (obj.remove("data"), obj.remove("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!(
                    "{}: data and data_base64 are both set; send one",
                    at("data")
                ),
                &original,
            ));
        }
        (Some(Value::Null), None) | (None, None) => Data::None,
        (Some(v), None) => Data::Json(v),
        (None, Some(Value::String(b))) => Data::Base64(b),
        (None, Some(_)) => {
            return Err(invalid(
                format!("{}: expected a base64 string", at("data_base64")),
                &original,
            ));
        }
    };
    for name in KNOWN_ATTRIBUTES {
        obj.remove(name);
    }
    let extensions = (!obj.is_empty()).then_some(obj);
    Ok(Event {
        id,
        source,
        ty,
        subject,
        time,
        datacontenttype,
        dataschema,
        extensions,
        data,
    })
}

/// A binary-mode event: attributes in `ce-*` headers (percent-encoded), the body is the data.
fn binary(headers: &HeaderMap, body: &[u8]) -> Result<Event, Invalid> {
    let invalid = |reason: String| Invalid {
        index: 0,
        reason,
        payload: String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned(),
    };
    let header = |name: &str| -> Result<Option<String>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => {
                let raw = v
                    .to_str()
                    .map_err(|_| format!("{name}: header is not ASCII (percent-encode it)"))?;
                let decoded = percent_decode(raw)
                    .ok_or_else(|| format!("{name}: malformed percent-encoding"))?;
                Ok((!decoded.is_empty()).then_some(decoded))
            }
        }
    };
    let required = |name: &str| -> Result<String, String> {
        header(name)?.ok_or_else(|| format!("{name}: required header is missing"))
    };
    let specversion = required("ce-specversion").map_err(invalid)?;
    check_specversion(Some(&specversion), "ce-specversion").map_err(invalid)?;
    let id = required("ce-id").map_err(invalid)?;
    let source = required("ce-source").map_err(invalid)?;
    let ty = required("ce-type").map_err(invalid)?;
    let subject = header("ce-subject").map_err(invalid)?;
    let time = header("ce-time").map_err(invalid)?;
    let time = parse_time(time.as_deref(), "ce-time").map_err(invalid)?;
    let dataschema = header("ce-dataschema").map_err(invalid)?;
    let datacontenttype = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut extensions = Map::new();
    for name in headers.keys() {
        let name = name.as_str();
        let Some(attribute) = name.strip_prefix("ce-") else {
            continue;
        };
        if KNOWN_ATTRIBUTES.contains(&attribute) {
            continue;
        }
        let value = header(name).map_err(invalid)?.unwrap_or_default();
        extensions.insert(attribute.to_string(), Value::String(value));
    }
    let data = if body.is_empty() {
        Data::None
    } else if media_type(headers).is_some_and(|t| t == "application/json" || t.ends_with("+json")) {
        match serde_json::from_slice(body) {
            Ok(v) => Data::Json(v),
            Err(e) => return Err(invalid(format!("body: malformed JSON ({e})"))),
        }
    } else {
        match std::str::from_utf8(body) {
            Ok(text) => Data::Text(text.to_string()),
            Err(_) => Data::Base64(base64_encode(body)),
        }
    };
    Ok(Event {
        id: Some(id),
        source: Some(source),
        ty: Some(ty),
        subject,
        time,
        datacontenttype,
        dataschema,
        extensions: (!extensions.is_empty()).then_some(extensions),
        data,
    })
}

fn check_specversion(version: Option<&str>, field: &str) -> Result<(), String> {
    match version {
        Some("1.0") => Ok(()),
        Some(other) => Err(format!(
            "{field}: unsupported CloudEvents version {other:?}; send 1.0"
        )),
        None => Err(format!("{field}: required attribute is missing")),
    }
}

fn parse_time(time: Option<&str>, field: &str) -> Result<Option<i64>, String> {
    time.map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|e| format!("{field}: {t:?} is not an RFC 3339 time ({e})"))
    })
    .transpose()
}

/// Decode `%XX` escapes (CloudEvents binary-mode header values); `None` when malformed or not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use hyper::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn one(mode: Mode, h: &HeaderMap, body: &str) -> Result<Event, Invalid> {
        let mut p = parse(mode, h, body.as_bytes(), "idempotency-key");
        assert_eq!(p.events.len(), 1);
        p.events.remove(0)
    }

    /// The structured-mode example of the CloudEvents HTTP protocol binding (3.2.4), with an
    /// extension.
    #[test]
    fn structured_mode_example_of_the_http_binding() {
        let h = headers(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        assert_eq!(Mode::of(&h), Ok(Mode::Structured));
        let e = one(
            Mode::Structured,
            &h,
            r#"{
                "specversion" : "1.0",
                "type" : "com.example.someevent",
                "time" : "2018-04-05T03:56:24Z",
                "id" : "1234-1234-1234",
                "source" : "/mycontext/subcontext",
                "comexampleextension1" : "value",
                "datacontenttype" : "application/xml",
                "data" : "<much wow=\"xml\"/>"
            }"#,
        )
        .unwrap();
        assert_eq!(e.id.as_deref(), Some("1234-1234-1234"));
        assert_eq!(e.source.as_deref(), Some("/mycontext/subcontext"));
        assert_eq!(e.ty.as_deref(), Some("com.example.someevent"));
        assert_eq!(e.time, Some(1_522_900_584_000));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/xml"));
        assert_eq!(
            e.extensions.map(Value::Object),
            Some(serde_json::json!({"comexampleextension1": "value"}))
        );
        assert_eq!(
            e.data,
            Data::Json(Value::String("<much wow=\"xml\"/>".into()))
        );
    }

    /// The binary-mode example of the HTTP binding (3.1.4), with a percent-encoded value.
    #[test]
    fn binary_mode_example_of_the_http_binding() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "com.example.someevent"),
            ("ce-time", "2018-04-05T03:56:24Z"),
            ("ce-id", "1234-1234-1234"),
            ("ce-source", "/mycontext/subcontext"),
            ("ce-subject", "caf%C3%A9"),
            ("ce-comexampleextension1", "value"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        assert_eq!(Mode::of(&h), Ok(Mode::Binary));
        let e = one(Mode::Binary, &h, r#"{"much": "wow"}"#).unwrap();
        assert_eq!(e.id.as_deref(), Some("1234-1234-1234"));
        assert_eq!(e.subject.as_deref(), Some("café"));
        assert_eq!(
            e.datacontenttype.as_deref(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            e.extensions.map(Value::Object),
            Some(serde_json::json!({"comexampleextension1": "value"}))
        );
        assert_eq!(e.data, Data::Json(serde_json::json!({"much": "wow"})));

        // Non-JSON data is kept as text.
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "t"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("content-type", "application/xml"),
        ]);
        let e = one(Mode::Binary, &h, "<much wow=\"xml\"/>").unwrap();
        assert_eq!(e.data, Data::Text("<much wow=\"xml\"/>".into()));
    }

    #[test]
    fn missing_required_attributes_are_named() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "t"),
            ("ce-source", "s"),
        ]);
        let err = one(Mode::Binary, &h, "").unwrap_err();
        assert_eq!(err.reason, "ce-id: required header is missing");

        let h = headers(&[("content-type", "application/cloudevents+json")]);
        let err = one(
            Mode::Structured,
            &h,
            r#"{"specversion": "1.0", "id": "1", "type": "t"}"#,
        )
        .unwrap_err();
        assert_eq!(err.reason, "[0].source: required attribute is missing");
        let err = one(
            Mode::Structured,
            &h,
            r#"{"specversion": "0.3", "id": "1", "type": "t", "source": "s"}"#,
        )
        .unwrap_err();
        assert!(
            err.reason.starts_with("[0].specversion: unsupported"),
            "{}",
            err.reason
        );
        let err = one(Mode::Structured, &h, r#"{"specversion": "1.0", "#).unwrap_err();
        assert!(
            err.reason.starts_with("body: malformed JSON"),
            "{}",
            err.reason
        );
        let err = one(
            Mode::Structured,
            &h,
            r#"{"specversion": "1.0", "id": "1", "type": "t", "source": "s", "time": "yesterday"}"#,
        )
        .unwrap_err();
        assert!(err.reason.starts_with("[0].time: "), "{}", err.reason);
    }

    /// The batch-mode example of the HTTP binding (3.3): a JSON array of structured events.
    #[test]
    fn batch_mode_reads_every_event_and_names_the_bad_ones() {
        let h = headers(&[("content-type", "application/cloudevents-batch+json")]);
        assert_eq!(Mode::of(&h), Ok(Mode::Batch));
        let p = parse(
            Mode::Batch,
            &h,
            br#"[
                {"specversion": "1.0", "type": "com.example.someevent", "id": "1", "source": "/mycontext", "data": {"a": 1}},
                {"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext"},
                {"specversion": "1.0", "type": "com.example.someevent", "id": "3", "source": "/mycontext", "data_base64": "AQID"}
            ]"#,
            "idempotency-key",
        );
        assert_eq!(p.events.len(), 3);
        assert_eq!(
            p.events[0].as_ref().unwrap().data,
            Data::Json(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            p.events[1].as_ref().unwrap_err().reason,
            "[1].id: required attribute is missing"
        );
        assert_eq!(
            p.events[2].as_ref().unwrap().data,
            Data::Base64("AQID".into())
        );
    }

    #[test]
    fn webhooks_take_their_id_from_the_idempotency_header() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("idempotency-key", "k1"),
        ]);
        assert_eq!(Mode::of(&h), Ok(Mode::Json));
        let p = parse(
            Mode::Json,
            &h,
            br#"[{"a": 1}, {"a": 2}]"#,
            "idempotency-key",
        );
        let ids: Vec<_> = p
            .events
            .iter()
            .map(|e| e.as_ref().unwrap().id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["k1:0", "k1:1"]);
        let p = parse(Mode::Json, &h, br#"{"a": 1}"#, "idempotency-key");
        assert_eq!(p.events[0].as_ref().unwrap().id.as_deref(), Some("k1"));

        let h = headers(&[("content-type", "application/x-ndjson")]);
        assert_eq!(Mode::of(&h), Ok(Mode::Ndjson));
        let p = parse(
            Mode::Ndjson,
            &h,
            b"{\"a\": 1}\n\nnot json\n{\"a\": 3}\n",
            "idempotency-key",
        );
        assert_eq!(p.events.len(), 3);
        assert!(p.events[0].as_ref().unwrap().id.is_none());
        assert!(
            p.events[1]
                .as_ref()
                .unwrap_err()
                .reason
                .starts_with("line 2: malformed JSON")
        );

        let h = headers(&[("content-type", "text/csv")]);
        assert!(
            Mode::of(&h)
                .unwrap_err()
                .contains("text/csv is not accepted")
        );
    }
}

//! [`RestApiSource`]: polls the API pass by pass, page by page, and yields one batch per page.

use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedBatch, PositionedStream, Result,
    Source, SourceStart,
};
use std::sync::Arc;

use arrow_array::BooleanArray;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use url::Url;

use super::config::{PaginationConfig, RestApiSourceConfig, WATERMARK_VARIABLE, WatermarkOrder};
use super::http::{Http, Request, display_url};
use super::watermark::{PassPosition, RestApiPosition, Tracker, Verdict, template_text};
use crate::decode::{JsonDecoder, schema_from_fields};

/// Pages decoded ahead of the sink.
const PAGES_AHEAD: usize = 4;

/// Records polled from an HTTP API; see the [module docs](super).
#[derive(Debug)]
pub struct RestApiSource {
    config: RestApiSourceConfig,
    at: String,
    name: String,
    schema: SchemaRef,
    http: Option<Http>,
}

impl RestApiSource {
    /// A source for `config`; errors name fields under `source`.
    pub fn new(config: RestApiSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source for `config`, whose errors name fields under `at` (e.g. `spec.source`).
    /// Secrets are read here: a missing one is an error naming the variable or file.
    pub fn new_at(config: RestApiSourceConfig, at: &str) -> Result<Self> {
        config.validate(at)?;
        let schema = schema_from_fields(&config.schema, &format!("{at}.schema"))?;
        // The spec's URL has no credentials (validated) and no query: safe to show.
        let name = format!(
            "rest-api {}",
            config.url.split('?').next().unwrap_or_default()
        );
        let http = Http::new(&config, at, name.clone())?;
        Ok(Self {
            config,
            at: at.to_string(),
            name,
            schema,
            http: Some(http),
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait::async_trait]
impl Source for RestApiSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        if start.mode == Mode::Stream && self.config.watermark.is_none() {
            return Err(Error::config(
                format!("{}.watermark", self.at),
                "is required in streaming mode (each poll must ask only for newer records); set the record field that orders them, or run a backfill",
            ));
        }
        let (resume, rows) = match &start.resume_from {
            None => (None, 0),
            Some(checkpoint) => (
                checkpoint.decode::<RestApiPosition>(&self.name)?,
                checkpoint.rows,
            ),
        };
        tracing::info!(source = %self.name, resume = ?resume, skip = rows, mode = start.mode.as_str(), "rest-api source opening");
        let http = match self.http.take() {
            Some(h) => h,
            None => Http::new(&self.config, &self.at, self.name.clone())?,
        };
        let tracker = self.config.watermark.as_ref().map(|w| {
            Tracker::new(
                w.kind,
                w.field.clone(),
                w.id_field.clone(),
                w.order == WatermarkOrder::Ascending,
                resume.as_ref(),
                w.start.as_ref(),
            )
        });
        // Without a watermark the position counts the records of the (only) pass: a restart
        // reads it again and skips them. Positions written before passes were tracked counted
        // good rows only.
        let (skip_records, skip_rows) = match (&self.config.watermark, &resume) {
            (None, Some(p)) => match &p.pass {
                Some(pass) => (pass.records, rows),
                None => (0, p.records + rows),
            },
            _ => (0, rows),
        };
        let (tx, rx) = mpsc::channel(PAGES_AHEAD);
        let mut run = Run {
            name: self.name.clone(),
            config: self.config.clone(),
            http,
            decoder: JsonDecoder::new(self.schema.clone()),
            mode: start.mode,
            out: tx,
            tracker,
            skip_rows,
            skip_records,
            consumed: 0,
            held: Vec::new(),
            held_letters: Vec::new(),
            last: resume,
        };
        let task = tokio::spawn(async move {
            if let Err(e) = run.drive().await {
                let _ = run.out.send(Err(e)).await;
            }
        });
        let stream =
            futures::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, guard)| async move {
                rx.recv().await.map(|item| (item, (rx, guard)))
            });
        Ok(stream.boxed())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        // Nothing to acknowledge upstream: the position lives in the sink's manifest.
        tracing::debug!(source = %self.name, ?checkpoint, "committed");
        Ok(())
    }
}

/// A record taken from a page, encoded for the decoder.
struct Taken {
    bytes: Vec<u8>,
    /// The URL of its page.
    origin: Arc<str>,
    page: u64,
    index: usize,
    /// The record as received, once its page is gone (held records); else read from the page.
    payload: Option<String>,
    /// May be one of the rows of a partly committed batch skipped after a restart (records
    /// taken while skipping what a restart had consumed before are new).
    skippable: bool,
}

impl AsRef<[u8]> for Taken {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// What one pass read.
#[derive(Debug, Default)]
struct PassStats {
    pages: u64,
    empty_pages: u64,
    records: u64,
}

/// The state of one opened stream.
struct Run {
    name: String,
    config: RestApiSourceConfig,
    http: Http,
    decoder: JsonDecoder,
    mode: Mode,
    out: mpsc::Sender<Result<PositionedBatch>>,
    tracker: Option<Tracker>,
    /// Good rows still to skip: the rows of a partly committed batch before a restart.
    skip_rows: u64,
    /// Without a watermark: records of the pass still to skip (consumed before a restart).
    skip_records: u64,
    /// Without a watermark: records of this pass consumed.
    consumed: u64,
    /// Records taken (and dead letters) while skipping what a restart had consumed before:
    /// held until that ends, so no position is written in its middle.
    held: Vec<Taken>,
    held_letters: Vec<DeadLetter>,
    /// The last position yielded (or resumed from).
    last: Option<RestApiPosition>,
}

impl Run {
    async fn drive(&mut self) -> Result<()> {
        loop {
            let stats = self.poll().await?;
            tracing::debug!(source = %self.name, pages = stats.pages, empty_pages = stats.empty_pages, records = stats.records, requests = self.http.requests, "pass done");
            match self.mode {
                Mode::Backfill => {
                    tracing::info!(source = %self.name, pages = stats.pages, records = stats.records, requests = self.http.requests, "rest-api backfill caught up: the pass read every page");
                    return Ok(());
                }
                Mode::Stream => tokio::time::sleep(self.config.poll_interval).await,
            }
        }
    }

    /// The first request of a pass.
    fn first_request(&self) -> Result<Request> {
        let watermark = self
            .tracker
            .as_ref()
            .and_then(Tracker::watermark)
            .map(template_text);
        let fill = |t: &str, encode: fn(&str) -> String| -> Option<String> {
            if !t.contains(WATERMARK_VARIABLE) {
                return Some(t.to_string());
            }
            watermark
                .as_ref()
                .map(|w| t.replace(WATERMARK_VARIABLE, &encode(w)))
        };
        let url_text = fill(&self.config.url, |w| {
            url::form_urlencoded::byte_serialize(w.as_bytes()).collect()
        })
        .unwrap_or_else(|| self.config.url.replace(WATERMARK_VARIABLE, ""));
        let mut url = Url::parse(&url_text).map_err(|e| {
            Error::source_permanent(
                &self.name,
                format!("the URL with the watermark filled in is not valid ({e}): {url_text}"),
            )
        })?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &self.config.query {
                if let Some(v) = fill(v, |w| w.to_string()) {
                    pairs.append_pair(k, &v);
                }
            }
        }
        match &self.config.pagination {
            PaginationConfig::PageNumber(p) => {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair(&p.param, &p.start.to_string());
                if let (Some(param), Some(size)) = (&p.size_param, p.size) {
                    pairs.append_pair(param, &size.to_string());
                }
            }
            PaginationConfig::Offset(o) => {
                url.query_pairs_mut()
                    .append_pair(&o.offset_param, "0")
                    .append_pair(&o.limit_param, &o.limit.to_string());
            }
            _ => {}
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let headers = self
            .config
            .headers
            .iter()
            .filter_map(|(k, v)| fill(v, |w| w.to_string()).map(|v| (k.clone(), v)))
            .collect();
        let body = self.config.body_template.as_ref().map(|b| {
            fill(b, |w| {
                let quoted = Value::String(w.to_string()).to_string();
                quoted[1..quoted.len() - 1].to_string()
            })
            .unwrap_or_else(|| b.replace(WATERMARK_VARIABLE, ""))
        });
        Ok(Request { url, headers, body })
    }

    /// Read every page of one pass.
    ///
    /// Only the absence of a next page ends a pass paged by a cursor, a next URL or a `Link`
    /// header: an empty page that has a next page is read past (an API that pages over its
    /// ids and then filters by the watermark returns such pages). Page-number and offset
    /// pagination have no other end than an empty page.
    async fn poll(&mut self) -> Result<PassStats> {
        let mut req = self.first_request()?;
        let mut stats = PassStats::default();
        let mut offset = 0u64;
        loop {
            stats.pages += 1;
            let page = stats.pages;
            let shown = display_url(&req.url);
            let resp = self.http.fetch(&req).await?;
            let records = match self.config.records_pointer.as_str() {
                "" => Some(&resp.body),
                p => resp.body.pointer(p),
            };
            let records: &[Value] = match records {
                None | Some(Value::Null) => &[],
                Some(Value::Array(a)) => a,
                Some(other) => {
                    let kind = match other {
                        Value::Object(_) => "an object",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        _ => "a boolean",
                    };
                    return Err(Error::source_permanent(
                        &self.name,
                        format!(
                            "the response of {shown} (HTTP {}) has {kind} at recordsPointer \"{}\", not an array of records; check recordsPointer",
                            resp.status, self.config.records_pointer
                        ),
                    ));
                }
            };
            let n = records.len() as u64;
            stats.records += n;
            if n == 0 {
                stats.empty_pages += 1;
            }
            let next = match &self.config.pagination {
                PaginationConfig::None => None,
                PaginationConfig::PageNumber(_) | PaginationConfig::Offset(_) if n == 0 => None,
                PaginationConfig::PageNumber(p) => Some(with_param(
                    &req.url,
                    &p.param,
                    &(p.start + page).to_string(),
                )),
                PaginationConfig::Offset(o) => {
                    offset += n;
                    Some(with_param(&req.url, &o.offset_param, &offset.to_string()))
                }
                PaginationConfig::Cursor(c) => match resp.body.pointer(&c.cursor_pointer) {
                    Some(Value::String(s)) if !s.is_empty() => {
                        Some(with_param(&req.url, &c.param, s))
                    }
                    Some(Value::Number(n)) => Some(with_param(&req.url, &c.param, &n.to_string())),
                    _ => None,
                },
                PaginationConfig::LinkHeader => resp
                    .link_next
                    .as_deref()
                    .map(|l| self.join(&req.url, l))
                    .transpose()?,
                PaginationConfig::NextUrl(u) => match resp.body.pointer(&u.pointer) {
                    Some(Value::String(s)) if !s.is_empty() => Some(self.join(&req.url, s)?),
                    _ => None,
                },
            };
            if next.as_ref() == Some(&req.url) {
                return Err(Error::source_permanent(
                    &self.name,
                    format!(
                        "the response of {shown} names the same page as its next page, so paging would never end; check the pagination settings (the cursor or next-page pointer and parameter)"
                    ),
                ));
            }
            self.land(records, &shown, page, next.is_none()).await?;
            match next {
                Some(url) => req.url = url,
                None => return Ok(stats),
            }
        }
    }

    fn join(&self, base: &Url, next: &str) -> Result<Url> {
        base.join(next).map_err(|e| {
            Error::source_permanent(
                &self.name,
                format!(
                    "the next-page URL \"{next}\" from {} is not valid: {e}",
                    display_url(base)
                ),
            )
        })
    }

    /// Decode one page's records, dead-letter the bad ones and yield the batch; `last` is the
    /// last page of the pass.
    async fn land(&mut self, records: &[Value], shown: &str, page: u64, last: bool) -> Result<()> {
        let origin: Arc<str> = Arc::from(shown);
        let mut taken = std::mem::take(&mut self.held);
        let mut letters = std::mem::take(&mut self.held_letters);
        let held = taken.len();
        let letter = |i: usize, reason: String, payload: String| {
            DeadLetter::new(shown, format!("page {page} record {i}"), reason).with_payload(payload)
        };
        for (i, r) in records.iter().enumerate() {
            let mut skippable = true;
            match &mut self.tracker {
                Some(t) => {
                    skippable = !t.in_prefix();
                    match t.consume(r) {
                        Verdict::Seen => continue,
                        Verdict::Reject(reason) => {
                            letters.push(letter(i, reason, r.to_string()));
                            continue;
                        }
                        Verdict::Take => {}
                    }
                }
                None => {
                    self.consumed += 1;
                    if self.skip_records > 0 {
                        self.skip_records -= 1;
                        continue;
                    }
                }
            }
            let bytes = if self.config.flatten_nested && r.is_object() {
                serde_json::to_vec(&flatten(r, &self.config.flatten_separator))
            } else {
                serde_json::to_vec(r)
            };
            match bytes {
                Ok(bytes) => taken.push(Taken {
                    bytes,
                    origin: origin.clone(),
                    page,
                    index: i,
                    payload: None,
                    skippable,
                }),
                Err(e) => letters.push(letter(i, e.to_string(), r.to_string())),
            }
        }
        if let Some(t) = &mut self.tracker {
            if let Some(what) = t.take_disorder() {
                tracing::warn!(source = %self.name, url = %shown, "the API was declared to return records in ascending watermark order (watermark.order: ascending), but {what}; the records are landed, and a restart inside this pass reads it again from its start. Set watermark.order to any if the API does not sort");
            }
            if last {
                t.complete_pass();
            }
        }
        if self.tracker.as_ref().is_some_and(Tracker::in_prefix) {
            // Still inside the records a restart had consumed before: what was taken here is
            // new (changed since), but a position here could not say what was consumed, so
            // it waits for the end of the prefix.
            for t in &mut taken[held..] {
                t.payload = Some(records[t.index].to_string());
            }
            self.held = taken;
            self.held_letters = letters;
            return Ok(());
        }
        let decoded = self.decoder.decode(&taken);
        let mut bad = vec![false; taken.len()];
        for (at, reason) in decoded.rejected {
            let t = &taken[at];
            bad[at] = true;
            let payload = match &t.payload {
                Some(p) => p.clone(),
                None => records[t.index].to_string(),
            };
            letters.push(
                DeadLetter::new(
                    &*t.origin,
                    format!("page {} record {}", t.page, t.index),
                    reason,
                )
                .with_payload(payload),
            );
        }
        let mut batch = decoded.batch;
        let decoded_rows = batch.num_rows();
        if self.skip_rows > 0 {
            // The first rows after a restart's position that were committed before it.
            let mut keep = Vec::with_capacity(decoded_rows);
            for (t, bad) in taken.iter().zip(&bad) {
                if *bad {
                    continue;
                }
                let drop = t.skippable && self.skip_rows > 0;
                if drop {
                    self.skip_rows -= 1;
                }
                keep.push(!drop);
            }
            batch = arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))?;
        }
        let position = match &self.tracker {
            Some(t) => t.position(),
            None => RestApiPosition {
                pass: Some(PassPosition {
                    records: self.consumed,
                    ..PassPosition::default()
                }),
                ..RestApiPosition::default()
            },
        };
        let moved = self.last.as_ref() != Some(&position);
        let worth = decoded_rows > 0
            || !letters.is_empty()
            || (last && moved && self.tracker.as_ref().is_none_or(Tracker::has_landed));
        if !worth {
            return Ok(());
        }
        let encoded = Position::encode(&position)?;
        self.last = Some(position);
        self.out
            .send(Ok(
                PositionedBatch::new(batch, encoded).with_dead_letters(letters)
            ))
            .await
            .map_err(|_| Error::source_permanent(&self.name, "the stream was dropped"))
    }
}

/// `url` with query parameter `key` set to `value` (replacing it).
fn with_param(url: &Url, key: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != key)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(key, value);
    out
}

/// Nested objects of `record` flattened into top-level keys joined by `sep`.
fn flatten(record: &Value, sep: &str) -> Value {
    fn walk(prefix: &str, v: &Map<String, Value>, sep: &str, out: &mut Map<String, Value>) {
        for (k, v) in v {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}{sep}{k}")
            };
            match v {
                Value::Object(inner) => walk(&key, inner, sep, out),
                other => {
                    out.insert(key, other.clone());
                }
            }
        }
    }
    let mut out = Map::new();
    if let Value::Object(m) = record {
        walk("", m, sep, &mut out);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_objects_flatten_and_arrays_stay() {
        let r =
            json!({"id": 1, "customer": {"id": 7, "address": {"city": "Oslo"}}, "tags": [1, 2]});
        assert_eq!(
            flatten(&r, "_"),
            json!({"id": 1, "customer_id": 7, "customer_address_city": "Oslo", "tags": [1, 2]})
        );
    }

    #[test]
    fn query_parameters_are_replaced() {
        let u = Url::parse("http://h/x?a=1&page=1").unwrap();
        assert_eq!(
            with_param(&u, "page", "2").as_str(),
            "http://h/x?a=1&page=2"
        );
        assert_eq!(
            with_param(&u, "c", "x y").as_str(),
            "http://h/x?a=1&page=1&c=x+y"
        );
    }
}

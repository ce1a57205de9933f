//! [`RestApiSource`]: polls the API pass by pass, page by page, and yields one batch per page.

use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use std::sync::Arc;

use arrow_array::UInt32Array;
use arrow_schema::SchemaRef;
use serde_json::{Map, Value};
use url::Url;

use super::config::{PaginationConfig, RestApiSourceConfig, WATERMARK_VARIABLE};
use super::http::{Http, Request, Response, display_url};
use super::watermark::{PassPosition, RestApiPosition, Tracker, Verdict, template_text};
use crate::decode::{JsonDecoder, schema_from_fields};
use crate::runtime::{Output, spawn_source};

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
        // Pages by number or offset are not worth keeping across a restart while a pass comes
        // in watermark order: the restart asks from the highest watermark instead.
        let by_number = matches!(
            self.config.pagination,
            PaginationConfig::PageNumber(_) | PaginationConfig::Offset(_)
        );
        // A restart inside a pass goes on at the pass's next page (without one, it reads the
        // pass again and skips what it had consumed).
        let resume_pass = resume
            .as_ref()
            .and_then(|p| p.pass.clone())
            .filter(|p| p.next.is_some());
        let tracker = self.config.watermark.as_ref().map(|w| {
            let mut t = Tracker::new(
                w.kind,
                w.field.clone(),
                w.id_field.clone(),
                by_number,
                resume.as_ref(),
                w.start.as_ref(),
            );
            if resume_pass.is_none() {
                t.read_pass_again();
            }
            t
        });
        // Without a watermark the position counts the records of the (only) pass. Positions
        // written before passes were tracked counted good rows from its start: the output
        // skips those too.
        let (consumed, skip_records, skip_rows) = match (&self.config.watermark, &resume) {
            (None, Some(p)) => match &p.pass {
                Some(pass) if pass.next.is_some() => (pass.records, 0, rows),
                Some(pass) => (0, pass.records, rows),
                None => (0, 0, p.records + rows),
            },
            _ => (0, 0, rows),
        };
        let mut start = start;
        if let Some(checkpoint) = &mut start.resume_from {
            checkpoint.rows = skip_rows;
        }
        let name = self.name.clone();
        let config = self.config.clone();
        let decoder = JsonDecoder::new(self.schema.clone());
        let mode = start.mode;
        Ok(spawn_source(
            &self.name,
            &start,
            PAGES_AHEAD,
            move |out| async move {
                Run {
                    name,
                    config,
                    http,
                    decoder,
                    mode,
                    out,
                    tracker,
                    skip_records,
                    consumed,
                    resume_pass,
                    held: Vec::new(),
                    held_letters: Vec::new(),
                    last: resume,
                }
                .drive()
                .await
            },
        ))
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
    /// taken while skipping what a restart had consumed before are new: they were not in
    /// that batch).
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
    /// Skips the rows of a partly committed batch after a restart.
    out: Output,
    tracker: Option<Tracker>,
    /// Without a watermark: records of the pass still to skip (consumed before a restart).
    skip_records: u64,
    /// Without a watermark: records of this pass consumed.
    consumed: u64,
    /// A restart inside a pass: where to go on with it.
    resume_pass: Option<PassPosition>,
    /// Records taken (and dead letters) while skipping what a restart had consumed before:
    /// held until that ends, so no position is written in its middle (and, while the output
    /// still skips the rows of a partly committed batch, until a page covers them).
    held: Vec<Taken>,
    held_letters: Vec<DeadLetter>,
    /// The last position yielded (or resumed from).
    last: Option<RestApiPosition>,
}

impl Run {
    async fn drive(&mut self) -> Result<()> {
        loop {
            let stats = self.poll().await?;
            tracing::debug!(source = %self.name, pages = stats.pages, empty_pages = stats.empty_pages, records = stats.records, requests = self.http.requests(), "pass done");
            match self.mode {
                Mode::Backfill => {
                    tracing::info!(source = %self.name, pages = stats.pages, records = stats.records, requests = self.http.requests(), "rest-api backfill caught up: the pass read every page");
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
        let first = self.first_request()?;
        let mut req = first.clone();
        let mut stats = PassStats::default();
        let mut offset = 0u64;
        // After a restart inside a pass: go on at its next page.
        let mut resumed = self.resume_pass.take();
        if let Some(pass) = &resumed {
            match pass.next.as_ref().map(|n| self.next_url(&first.url, n)) {
                Some(Ok(url)) => {
                    req.url = url;
                    stats.pages = pass.pages;
                    if let PaginationConfig::Offset(_) = self.config.pagination {
                        offset = pass.next.as_ref().and_then(Value::as_u64).unwrap_or(0);
                    }
                }
                _ => {
                    self.read_pass_again(pass, "it cannot be rebuilt");
                    resumed = None;
                }
            }
        }
        loop {
            stats.pages += 1;
            let page = stats.pages;
            let shown = display_url(&req.url);
            let resp = match self.http.fetch(&req).await {
                Ok(r) => r,
                Err(e) if resumed.is_some() && self.http.refused_by_client() => {
                    // An expired or invalid cursor: read the pass again from its start.
                    if let Some(pass) = resumed.take() {
                        self.read_pass_again(&pass, &e.report());
                    }
                    req = first.clone();
                    stats = PassStats::default();
                    offset = 0;
                    continue;
                }
                Err(e) => return Err(e),
            };
            resumed = None;
            let Page {
                records,
                next,
                next_url,
            } = page_of(&self.config, &self.name, &req.url, &resp, page, &mut offset)?;
            stats.records += records.len() as u64;
            if records.is_empty() {
                stats.empty_pages += 1;
            }
            self.land(records, &shown, page, next).await?;
            match next_url {
                Some(url) => req.url = url,
                None => return Ok(stats),
            }
        }
    }

    fn next_url(&self, base: &Url, next: &Value) -> Result<Url> {
        next_url(&self.config, &self.name, base, next)
    }

    /// The next page of a pass a restart went on with cannot be read (`why`): read the pass
    /// again from its start and skip the records consumed before the restart.
    fn read_pass_again(&mut self, pass: &PassPosition, why: &str) {
        tracing::warn!(
            source = %self.name,
            pages = pass.pages,
            records = pass.records,
            "going on with the pass interrupted by the restart at its page {} failed: {why}; reading the pass again from its start and skipping the {} records it had consumed",
            pass.pages + 1,
            pass.records
        );
        match &mut self.tracker {
            Some(t) => t.read_pass_again(),
            None => {
                self.skip_records = pass.records;
                self.consumed = 0;
            }
        }
    }

    /// Decode one page's records, dead-letter the bad ones and yield the batch; `next` is the
    /// next page of the pass (none after its last page).
    async fn land(
        &mut self,
        records: &[Value],
        shown: &str,
        page: u64,
        next: Option<Value>,
    ) -> Result<()> {
        let last = next.is_none();
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
        if last && let Some(t) = &mut self.tracker {
            t.complete_pass();
        }
        if self.tracker.as_ref().is_some_and(Tracker::in_prefix) {
            // Still inside the records a restart had consumed before: what was taken here is
            // new (changed since), but a position here could not say what was consumed, so
            // it waits for the end of the prefix.
            self.hold(taken, held, letters, records);
            return Ok(());
        }
        let decoded = self.decoder.decode(&taken);
        let mut bad = vec![false; taken.len()];
        let mut rejected = Vec::with_capacity(decoded.rejected.len());
        for (at, reason) in decoded.rejected {
            let t = &taken[at];
            bad[at] = true;
            let payload = match &t.payload {
                Some(p) => p.clone(),
                None => records[t.index].to_string(),
            };
            rejected.push(
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
        if let Some((order, covered)) = self.new_rows_last(&taken, &bad) {
            if !covered && !last {
                // This page's own rows do not cover what the output still skips: hold them
                // all (their dead letters are found again when they are decoded).
                self.hold(taken, held, letters, records);
                return Ok(());
            }
            batch = arrow_select::take::take_record_batch(&batch, &UInt32Array::from(order))?;
        }
        letters.extend(rejected);
        let mut position = match &self.tracker {
            Some(t) => t.position(),
            None => RestApiPosition {
                pass: Some(PassPosition {
                    records: self.consumed,
                    ..PassPosition::default()
                }),
                ..RestApiPosition::default()
            },
        };
        if let Some(pass) = &mut position.pass {
            pass.pages = page;
            pass.next = next;
        }
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
            .emit(batch, encoded, letters)
            .await
            .map_err(|closed| Error::source_permanent(&self.name, closed.to_string()))
    }

    /// Keep `taken` (of which those from `held` on come from `records`) and `letters` for the
    /// next page.
    fn hold(
        &mut self,
        mut taken: Vec<Taken>,
        held: usize,
        letters: Vec<DeadLetter>,
        records: &[Value],
    ) {
        for t in &mut taken[held..] {
            if t.payload.is_none() {
                t.payload = Some(records[t.index].to_string());
            }
        }
        self.held = taken;
        self.held_letters = letters;
    }

    /// While the output still skips the rows of a partly committed batch (the first rows it
    /// emits after a restart), rows taken while skipping what the restart had consumed before
    /// must come after them: they are new, not among the rows to skip. When such rows are
    /// among the good rows (`bad` marks the others): the order of the batch's rows that puts
    /// them last, and whether the page's own rows cover what is left to skip. `None` when the
    /// batch stays as it is.
    fn new_rows_last(&self, taken: &[Taken], bad: &[bool]) -> Option<(Vec<u32>, bool)> {
        let to_skip = self.out.rows_to_skip();
        if to_skip == 0 {
            return None;
        }
        let good = taken.iter().zip(bad).filter(|(_, bad)| !**bad);
        let mut own = Vec::new();
        let mut new = Vec::new();
        for (row, (t, _)) in good.enumerate() {
            if t.skippable {
                own.push(row as u32);
            } else {
                new.push(row as u32);
            }
        }
        if new.is_empty() {
            return None;
        }
        let covered = own.len() as u64 >= to_skip;
        own.extend(new);
        Some((own, covered))
    }
}

/// One page of a pass as the source reads it from a response.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    /// The records at `recordsPointer` (none when it is missing or null).
    pub(crate) records: &'a [Value],
    /// The next page, as kept in the position (none after the last page).
    pub(crate) next: Option<Value>,
    /// The URL of the next page.
    pub(crate) next_url: Option<Url>,
}

/// The records and the next page of the response `resp` to the request of page `page` at
/// `url`; `offset` is the records read so far in the pass (offset pagination), advanced by
/// this page's. Errors (naming the page and what to check) when `recordsPointer` points at
/// something other than an array, when a next-page URL is not valid, and when the next page
/// is this page again (paging would never end).
pub(crate) fn page_of<'a>(
    config: &RestApiSourceConfig,
    name: &str,
    url: &Url,
    resp: &'a Response,
    page: u64,
    offset: &mut u64,
) -> Result<Page<'a>> {
    let shown = display_url(url);
    let records = match config.records_pointer.as_str() {
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
                name,
                format!(
                    "the response of {shown} (HTTP {}) has {kind} at recordsPointer \"{}\", not an array of records; check recordsPointer",
                    resp.status, config.records_pointer
                ),
            ));
        }
    };
    let n = records.len() as u64;
    // The next page, as kept in the position, and its URL.
    let next: Option<Value> = match &config.pagination {
        PaginationConfig::None => None,
        PaginationConfig::PageNumber(_) | PaginationConfig::Offset(_) if n == 0 => None,
        PaginationConfig::PageNumber(p) => Some(Value::from(p.start.saturating_add(page))),
        PaginationConfig::Offset(_) => {
            *offset = offset.saturating_add(n);
            Some(Value::from(*offset))
        }
        PaginationConfig::Cursor(c) => match resp.body.pointer(&c.cursor_pointer) {
            Some(Value::String(s)) if !s.is_empty() => Some(Value::String(s.clone())),
            Some(Value::Number(n)) => Some(Value::Number(n.clone())),
            _ => None,
        },
        PaginationConfig::LinkHeader => resp
            .link_next
            .as_deref()
            .map(|l| join(name, url, l).map(|u| Value::String(u.into())))
            .transpose()?,
        PaginationConfig::NextUrl(u) => match resp.body.pointer(&u.pointer) {
            Some(Value::String(s)) if !s.is_empty() => {
                Some(Value::String(join(name, url, s)?.into()))
            }
            _ => None,
        },
    };
    let next_url = next
        .as_ref()
        .map(|n| next_url(config, name, url, n))
        .transpose()?;
    if next_url.as_ref() == Some(url) {
        return Err(Error::source_permanent(
            name,
            format!(
                "the response of {shown} names the same page as its next page, so paging would never end; check the pagination settings (the cursor or next-page pointer and parameter)"
            ),
        ));
    }
    Ok(Page {
        records,
        next,
        next_url,
    })
}

/// The URL of the next page `next` (as kept in the position), from the URL of a page of the
/// same pass.
pub(crate) fn next_url(
    config: &RestApiSourceConfig,
    name: &str,
    base: &Url,
    next: &Value,
) -> Result<Url> {
    let text = match next {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(match &config.pagination {
        PaginationConfig::PageNumber(p) => with_param(base, &p.param, &text),
        PaginationConfig::Offset(o) => with_param(base, &o.offset_param, &text),
        PaginationConfig::Cursor(c) => with_param(base, &c.param, &text),
        PaginationConfig::LinkHeader | PaginationConfig::NextUrl(_) | PaginationConfig::None => {
            join(name, base, &text)?
        }
    })
}

/// `next` (absolute, or relative to `base`) as a URL; an error naming it when it is not valid.
fn join(name: &str, base: &Url, next: &str) -> Result<Url> {
    base.join(next).map_err(|e| {
        Error::source_permanent(
            name,
            format!(
                "the next-page URL \"{next}\" from {} is not valid: {e}",
                display_url(base)
            ),
        )
    })
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
pub(crate) fn flatten(record: &Value, sep: &str) -> Value {
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

//! The REST API source against a real HTTP server on 127.0.0.1 ([`TestApi`]): every pagination
//! style, exact resume across watermark boundaries, streaming polls, authentication (bearer,
//! API key, basic, OAuth2 with expiring tokens), retries on 429/500/timeouts, malformed
//! bodies, schema violations, the response size limit and the request-rate limit.
#![cfg(feature = "rest-api")]

use std::time::Duration;

use arcane_core::testing::conformance;
use arcane_core::{Checkpoint, Error, Mode, PositionedBatch, Retry, Source, SourceStart};
use arcane_sources::rest_api::{
    ApiKeyAuth, AuthConfig, BasicAuth, BearerAuth, CursorPagination, FieldConfig,
    NextUrlPagination, OAuth2Auth, OffsetPagination, PageNumberPagination, PaginationConfig,
    RestApiPosition, RestApiSource, RestApiSourceConfig, SecretSource, WatermarkConfig,
    WatermarkKind,
};
use arcane_test_support::rest_api::{ApiAuth, Fault, TestApi};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use futures::StreamExt;

fn schema() -> Vec<FieldConfig> {
    vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("updated_at", "timestamp[ms, UTC]").required(),
        FieldConfig::new("name", "utf8"),
        FieldConfig::new("amount", "float64"),
        FieldConfig::new("customer_id", "int64"),
        FieldConfig::new("customer_country", "utf8"),
    ]
}

/// A spec for the `style` endpoint with pages of `limit`, watermark `updated_at` + id.
fn config(api: &TestApi, style: &str, limit: u64) -> RestApiSourceConfig {
    let mut c = RestApiSourceConfig::new(api.url(&format!("/items/{style}")), schema());
    c.query
        .insert("updated_since".into(), "{{watermark}}".into());
    if style != "offset" {
        c.query.insert("limit".into(), limit.to_string());
    }
    c.records_pointer = match style {
        "link" => "",
        "next" => "/items",
        _ => "/data",
    }
    .into();
    c.pagination = match style {
        "page" => PaginationConfig::PageNumber(PageNumberPagination {
            param: "page".into(),
            start: 1,
            size_param: None,
            size: None,
        }),
        "offset" => PaginationConfig::Offset(OffsetPagination {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            limit,
        }),
        "cursor" | "filtered" => PaginationConfig::Cursor(CursorPagination {
            cursor_pointer: "/next_cursor".into(),
            param: "cursor".into(),
        }),
        "link" => PaginationConfig::LinkHeader,
        "next" => PaginationConfig::NextUrl(NextUrlPagination {
            pointer: "/next".into(),
        }),
        other => panic!("unknown style {other}"),
    };
    c.watermark = Some(WatermarkConfig {
        field: "updated_at".into(),
        kind: WatermarkKind::Timestamp,
        id_field: Some("id".into()),
        start: None,
    });
    c.flatten_nested = true;
    c.retry.initial_delay = Duration::from_millis(10);
    c.retry.max_delay = Duration::from_millis(100);
    c
}

fn backfill() -> SourceStart {
    SourceStart {
        mode: Mode::Backfill,
        ..SourceStart::default()
    }
}

/// Read until the stream ends; the error, if it ended with one.
async fn read(
    source: &mut RestApiSource,
    start: SourceStart,
) -> (Vec<PositionedBatch>, Option<Error>) {
    let mut stream = source.open(start).await.expect("open");
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => out.push(b),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn ids(batches: &[PositionedBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.batch
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretSource {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    SecretSource::File(path.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pagination_style_lands_every_record_once_with_types_and_flattening() {
    let api = TestApi::start(250);
    for style in ["page", "offset", "cursor", "link", "next"] {
        let mut source = RestApiSource::new(config(&api, style, 40)).unwrap();
        let (batches, err) = read(&mut source, backfill()).await;
        assert!(err.is_none(), "{style}: {err:?}");
        assert_eq!(ids(&batches), (1..=250).collect::<Vec<_>>(), "{style}");
        // One batch per non-empty page (page-number and offset pagination learn that the
        // pass ended from an empty page: its batch has no rows, only the final position).
        let non_empty = batches.iter().filter(|b| b.batch.num_rows() > 0).count();
        assert_eq!(non_empty, 7, "{style}");
        assert!(batches.len() <= 8, "{style}");
        let first = &batches[0].batch;
        let at = first
            .column_by_name("updated_at")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        assert_eq!(at.value(3), 1_767_225_601_000, "{style}");
        let country = first
            .column_by_name("customer_country")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(country.value(0), "SE");
        assert_eq!(
            first
                .column_by_name("customer_id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(2),
            3
        );
        // The last position is the end of the pass: its highest watermark with the ids landed
        // at it, and nothing about the pass any more.
        let last: RestApiPosition = batches.last().unwrap().position.decode("t").unwrap();
        assert_eq!(
            last.watermark,
            Some(serde_json::json!("2026-01-01T00:01:23Z"))
        );
        assert_eq!(last.ids, vec![serde_json::json!(250)]);
        assert_eq!(last.pass, None, "{style}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_inside_groups_of_equal_watermarks() {
    // Pages of 40 split the groups of three equal timestamps; resuming after a page or inside
    // one must neither repeat nor lose a record.
    let api = TestApi::start(130);
    for style in ["cursor", "offset"] {
        let cfg = config(&api, style, 40);
        conformance::source_resumes_exactly(|| {
            Box::new(RestApiSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
        })
        .await;
        conformance::source_survives_stop_and_abort(|| {
            Box::new(RestApiSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
        })
        .await;
    }
    // Without a watermark: the position counts records; a backfill resumes by skipping them.
    let mut cfg = config(&api, "page", 40);
    cfg.watermark = None;
    conformance::source_resumes_exactly(|| {
        Box::new(RestApiSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
    })
    .await;
    // Strictly increasing ids as the watermark, without an id field.
    let mut cfg = config(&api, "cursor", 40);
    cfg.watermark = Some(WatermarkConfig {
        field: "id".into(),
        kind: WatermarkKind::Number,
        id_field: None,
        start: Some(serde_json::json!(11)),
    });
    cfg.query.clear();
    cfg.query.insert("limit".into(), "40".into());
    let mut source = RestApiSource::new(cfg.clone()).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&batches), (11..=130).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_inside_a_pass_goes_on_at_its_next_page() {
    let api = TestApi::start(100);
    let cfg = config(&api, "next", 40);
    let mut source = RestApiSource::new(cfg.clone()).unwrap();
    let (batches, _) = read(&mut source, backfill()).await;
    // The first page ends at id 40, the first of three records at 00:00:13: the position
    // holds that maximum and, as the pass is not over, where it started, how far it got and
    // its next page.
    let pos: RestApiPosition = batches[0].position.decode("t").unwrap();
    assert_eq!(
        pos.watermark,
        Some(serde_json::json!("2026-01-01T00:00:13Z"))
    );
    assert_eq!(pos.ids, vec![serde_json::json!(40)]);
    let pass = pos.pass.clone().expect("inside the pass");
    assert_eq!(pass.watermark, None);
    assert_eq!((pass.pages, pass.records), (1, 40));
    assert_eq!(pass.last_id, Some(serde_json::json!(40)));
    let next = pass
        .next
        .as_ref()
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    assert!(
        next.starts_with(&api.url("/items/next?")) && next.ends_with("start=40"),
        "{pass:?}"
    );
    let resume = |position| SourceStart {
        resume_from: Some(Checkpoint {
            position: Some(position),
            rows: 5,
        }),
        ..backfill()
    };
    let before = api.stats().requests;
    let mut resumed = RestApiSource::new(cfg).unwrap();
    let (rest, err) = read(&mut resumed, resume(batches[0].position.clone())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&rest), (46..=100).collect::<Vec<_>>());
    // Pages 2 and 3 only.
    assert_eq!(api.stats().requests - before, 2);

    // Pages by number: while the pass is in watermark order the position is the highest
    // watermark landed, and a restart asks from it.
    let cfg = config(&api, "page", 40);
    let mut source = RestApiSource::new(cfg.clone()).unwrap();
    let (batches, _) = read(&mut source, backfill()).await;
    let pos: RestApiPosition = batches[0].position.decode("t").unwrap();
    assert_eq!(pos.pass, None);
    assert_eq!(pos.ids, vec![serde_json::json!(40)]);
    let before = api.stats().requests;
    let mut resumed = RestApiSource::new(cfg).unwrap();
    let (rest, err) = read(&mut resumed, resume(batches[0].position.clone())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&rest), (46..=100).collect::<Vec<_>>());
    // 61 records from 00:00:13 on: pages of 40 and 21, then the empty page.
    assert_eq!(api.stats().requests - before, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_pages_with_a_next_cursor_do_not_end_the_pass() {
    // /items/filtered pages over the id range and then filters by updated_since: asked from
    // record 200's watermark, its first pages are empty but have a next cursor.
    let api = TestApi::start(300);
    let mut cfg = config(&api, "filtered", 40);
    let start = arcane_test_support::rest_api::record(200)["updated_at"].clone();
    cfg.watermark.as_mut().unwrap().start = Some(start);
    let mut source = RestApiSource::new(cfg.clone()).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    // 199, 200 and 201 share the watermark; the lower bound is inclusive.
    assert_eq!(ids(&batches), (199..=300).collect::<Vec<_>>());
    assert!(api.stats().empty_pages_with_next >= 4, "{:?}", api.stats());

    // Streaming: after the first pass every pass asks from its maximum, so its first pages
    // are empty; records added later are still found behind them.
    let mut cfg = config(&api, "filtered", 40);
    cfg.poll_interval = Duration::from_millis(50);
    let mut source = RestApiSource::new(cfg).unwrap();
    let mut stream = source
        .open(SourceStart {
            mode: Mode::Stream,
            ..SourceStart::default()
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 300 {
        got.extend(ids(&[stream.next().await.unwrap().unwrap()]));
    }
    api.grow_to(330);
    api.update(&[7, 250]);
    let mut letters = 0;
    while got.len() < 332 {
        let b = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("new records within 30 s")
            .unwrap()
            .unwrap();
        letters += b.dead_letters.len();
        got.extend(ids(&[b]));
    }
    let mut expected: Vec<i64> = (1..=330).collect();
    expected.extend([7, 250]);
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
    assert_eq!(letters, 0);
}

/// `(id, updated_at)` of every row of `batches`.
fn versions(batches: &[PositionedBatch]) -> Vec<(i64, i64)> {
    batches
        .iter()
        .flat_map(|b| {
            let id = b
                .batch
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let at = b
                .batch
                .column_by_name("updated_at")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .clone();
            (0..b.batch.num_rows()).map(move |i| (id.value(i), at.value(i) / 1000))
        })
        .collect()
}

/// `(id, updated_at)` of the API's current records.
fn current(api: &TestApi) -> Vec<(i64, i64)> {
    api.records()
        .iter()
        .map(|r| {
            let at = chrono::DateTime::parse_from_rfc3339(r["updated_at"].as_str().unwrap())
                .unwrap()
                .timestamp();
            (r["id"].as_i64().unwrap(), at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_out_of_watermark_order_land_once_without_dead_letters() {
    let api = TestApi::start_shuffled(500, 7);
    let cfg = config(&api, "filtered", 60);
    let mut source = RestApiSource::new(cfg.clone()).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&batches), (1..=500).collect::<Vec<_>>());
    assert!(batches.iter().all(|b| b.dead_letters.is_empty()));
    // The pass ends at its maximum, whatever the order: the last of the records.
    let last: RestApiPosition = batches.last().unwrap().position.decode("t").unwrap();
    assert_eq!(last.pass, None);
    let max = current(&api).iter().map(|(_, at)| *at).max().unwrap();
    let max_ids: Vec<serde_json::Value> = current(&api)
        .iter()
        .filter(|(_, at)| *at == max)
        .map(|(id, _)| serde_json::json!(id))
        .collect();
    assert_eq!(last.ids, max_ids);
    // Positions stay small: no list grows with the records out of order.
    for b in &batches {
        assert!(b.position.0.to_string().len() < 300, "{:?}", b.position);
    }
    // A restart after a page, and inside one, lands every record once.
    conformance::source_resumes_exactly(|| {
        Box::new(RestApiSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
    })
    .await;
    // Pages by number and offset too.
    for style in ["page", "offset"] {
        let cfg = config(&api, style, 60);
        let mut source = RestApiSource::new(cfg.clone()).unwrap();
        let (batches, err) = read(&mut source, backfill()).await;
        assert!(err.is_none(), "{style}: {err:?}");
        assert_eq!(ids(&batches), (1..=500).collect::<Vec<_>>(), "{style}");
        conformance::source_resumes_exactly(|| {
            Box::new(RestApiSource::new(cfg.clone()).unwrap()) as Box<dyn Source>
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_cursor_expired_reads_the_pass_again_and_lands_what_changed() {
    // Updated in place, records 20 and 150 are out of watermark order in the id-paged API.
    let api = TestApi::start(200);
    api.update(&[20, 150]);
    let cfg = config(&api, "filtered", 40);
    let mut source = RestApiSource::new(cfg.clone()).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    // The first page (ids 1..=40) was committed, then the process died.
    let landed = versions(&batches[..1]);
    assert_eq!(landed.len(), 40);
    let restart = || SourceStart {
        resume_from: Some(Checkpoint::at(batches[0].position.clone())),
        ..backfill()
    };

    // The restart goes on with the pass at its next page (the API's cursor pins the data
    // the pass started on, so records changed in the meantime wait for the next pass).
    api.update(&[10, 100]);
    api.grow_to(210);
    let mut resumed = RestApiSource::new(cfg.clone()).unwrap();
    let (rest, err) = read(&mut resumed, restart()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&rest), (41..=200).collect::<Vec<_>>());

    // The cursor expired before the restart: the pass is read again from its start, the
    // records consumed before are skipped, and those that changed since are landed.
    api.expire_cursors();
    let before = api.stats();
    let mut resumed = RestApiSource::new(cfg).unwrap();
    let (rest, err) = read(&mut resumed, restart()).await;
    assert!(err.is_none(), "{err:?}");
    let mut all = landed;
    all.extend(versions(&rest));
    let unique: std::collections::BTreeSet<(i64, i64)> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a version landed twice");
    for version in current(&api) {
        assert!(unique.contains(&version), "{version:?} is missing");
    }
    // Nothing of the first page but record 10's new version was landed again.
    let again: Vec<i64> = versions(&rest)
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id <= 40)
        .collect();
    assert_eq!(again, vec![10]);
    // The refused cursor, then the whole pass: 6 pages of 40 ids.
    assert_eq!(api.stats().requests - before.requests, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_polls_ask_only_for_newer_records() {
    let api = TestApi::start(50);
    let mut cfg = config(&api, "cursor", 20);
    cfg.poll_interval = Duration::from_millis(50);
    let mut source = RestApiSource::new(cfg).unwrap();
    let mut stream = source
        .open(SourceStart {
            mode: Mode::Stream,
            ..SourceStart::default()
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 50 {
        got.extend(ids(&[stream.next().await.unwrap().unwrap()]));
    }
    api.grow_to(75);
    while got.len() < 75 {
        let b = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("new records within 30 s")
            .unwrap()
            .unwrap();
        got.extend(ids(&[b]));
    }
    assert_eq!(got, (1..=75).collect::<Vec<_>>());
    // Let a few more polls happen: they find nothing new.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    assert!(extra.is_err(), "unexpected batch {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_bearer_api_key_and_basic_auth_read_secrets_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(30);
    let cases: Vec<(ApiAuth, AuthConfig)> = vec![
        (
            ApiAuth::Bearer("s3cr3t-token".into()),
            AuthConfig::Bearer(BearerAuth {
                token: secret_file(&dir, "token", "s3cr3t-token"),
            }),
        ),
        (
            ApiAuth::ApiKey("x-api-key".into(), "k3y".into()),
            AuthConfig::ApiKey(ApiKeyAuth {
                header: "X-Api-Key".into(),
                key: secret_file(&dir, "key", "k3y"),
            }),
        ),
        (
            ApiAuth::Basic("reader".into(), "pa55word".into()),
            AuthConfig::Basic(BasicAuth {
                username: "reader".into(),
                password: secret_file(&dir, "password", "pa55word"),
            }),
        ),
    ];
    for (server, client) in cases {
        api.set_auth(server);
        let mut cfg = config(&api, "page", 10);
        cfg.auth = Some(client);
        let mut source = RestApiSource::new(cfg.clone()).unwrap();
        let shown = format!("{source:?} {}", source.name());
        for secret in ["s3cr3t-token", "k3y", "pa55word"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let (batches, err) = read(&mut source, backfill()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(ids(&batches).len(), 30);
    }

    // A wrong secret is a permanent error naming the URL and status, without the secret.
    api.set_auth(ApiAuth::Bearer("right-token".into()));
    let mut cfg = config(&api, "page", 10);
    cfg.auth = Some(AuthConfig::Bearer(BearerAuth {
        token: secret_file(&dir, "wrong", "wrong-token-value"),
    }));
    let mut source = RestApiSource::new(cfg).unwrap();
    let (_, err) = read(&mut source, backfill()).await;
    let err = err.expect("401 fails the source");
    let text = err.to_string();
    assert!(
        text.contains("401") && text.contains("/items/page"),
        "{text}"
    );
    assert!(!text.contains("wrong-token-value"), "{text}");
    assert!(
        matches!(
            err,
            Error::Source {
                retry: Retry::Permanent,
                ..
            }
        ),
        "{err:?}"
    );

    // A missing secret is named, before any request.
    let mut cfg = config(&api, "page", 10);
    cfg.auth = Some(AuthConfig::Bearer(BearerAuth {
        token: SecretSource::Env("ARCANE_TEST_REST_NO_SUCH_VARIABLE".into()),
    }));
    let err = RestApiSource::new(cfg).unwrap_err();
    assert!(matches!(err, Error::MissingSecret { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("ARCANE_TEST_REST_NO_SUCH_VARIABLE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_refreshed_before_expiry_and_after_a_401() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(60);
    let oauth = |refresh: Duration| {
        AuthConfig::OAuth2ClientCredentials(OAuth2Auth {
            token_url: api.url("/oauth/token"),
            client_id: "arcane".into(),
            client_secret: secret_file(&dir, "client-secret", "cl13nt-s3cr3t"),
            scope: Some("read".into()),
            credentials_in_body: false,
            refresh_before_expiry: refresh,
        })
    };
    // Tokens announced for 1 s, refreshed 1 s before: every request gets a fresh token and
    // the server never answers 401.
    api.set_auth(ApiAuth::OAuth2 {
        client_id: "arcane".into(),
        client_secret: "cl13nt-s3cr3t".into(),
        expires_in: 1,
        lifetime: Duration::from_secs(3600),
    });
    let mut cfg = config(&api, "page", 10);
    cfg.auth = Some(oauth(Duration::from_secs(1)));
    let mut source = RestApiSource::new(cfg).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&batches).len(), 60);
    let stats = api.stats();
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(stats.tokens, stats.requests, "{stats:?}");

    // Tokens announced for an hour but revoked after 150 ms: a 401 gets a new token and the
    // request is repeated.
    api.set_auth(ApiAuth::OAuth2 {
        client_id: "arcane".into(),
        client_secret: "cl13nt-s3cr3t".into(),
        expires_in: 3600,
        lifetime: Duration::from_millis(150),
    });
    let mut cfg = config(&api, "page", 10);
    cfg.auth = Some(oauth(Duration::from_secs(60)));
    cfg.max_requests_per_second = Some(10.0);
    let before = api.stats();
    let mut source = RestApiSource::new(cfg).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&batches), (1..=60).collect::<Vec<_>>());
    let stats = api.stats();
    assert!(stats.unauthorized > before.unauthorized, "{stats:?}");
    assert!(stats.tokens - before.tokens >= 2, "{stats:?}");

    // A wrong client secret is a clear, permanent error without the secret.
    let mut cfg = config(&api, "page", 10);
    cfg.auth = Some(AuthConfig::OAuth2ClientCredentials(OAuth2Auth {
        token_url: api.url("/oauth/token"),
        client_id: "arcane".into(),
        client_secret: secret_file(&dir, "bad-secret", "not-the-secret"),
        scope: None,
        credentials_in_body: true,
        refresh_before_expiry: Duration::from_secs(1),
    }));
    let mut source = RestApiSource::new(cfg).unwrap();
    let (_, err) = read(&mut source, backfill()).await;
    let text = err.expect("bad client secret").to_string();
    assert!(
        text.contains("token endpoint") && text.contains("401"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_server_errors_and_slow_responses_are_retried() {
    let api = TestApi::start(80);
    api.push_faults([
        Fault::TooManyRequests(1),
        Fault::ServerError,
        Fault::Slow(Duration::from_secs(5)),
        Fault::Unavailable,
    ]);
    let mut cfg = config(&api, "link", 20);
    cfg.http_timeout = Duration::from_secs(1);
    let mut source = RestApiSource::new(cfg).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&batches), (1..=80).collect::<Vec<_>>());
    let stats = api.stats();
    assert_eq!(stats.faults, 4);
    // Retry-After: 1 was honoured.
    let (at_429, _) = stats.log.iter().find(|(_, s)| *s == 429).copied().unwrap();
    let next = stats.log.iter().find(|(t, _)| *t > at_429).unwrap().0;
    assert!(
        next - at_429 >= Duration::from_millis(950),
        "{:?}",
        next - at_429
    );

    // Retries run out: a transient error (the process is restarted) naming the URL.
    api.push_faults(std::iter::repeat_n(Fault::ServerError, 5));
    let mut cfg = config(&api, "link", 20);
    cfg.retry.max_attempts = 3;
    let mut source = RestApiSource::new(cfg).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(batches.is_empty());
    let err = err.expect("retries exhausted");
    assert!(
        matches!(
            err,
            Error::Source {
                retry: Retry::Transient,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("3 attempts") && err.to_string().contains("500"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_retried_and_fails_permanently_when_it_persists() {
    // Once (a proxy's error page with status 200): retried, and the pass completes.
    let api = TestApi::start(30);
    api.push_faults([Fault::Malformed]);
    let mut source = RestApiSource::new(config(&api, "page", 10)).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&batches), (1..=30).collect::<Vec<_>>());
    assert_eq!(api.stats().faults, 1);

    // Every time: a permanent error naming the URL and status, with the start of the body.
    api.set_persistent_fault(Some(Fault::Malformed));
    let mut cfg = config(&api, "page", 10);
    cfg.retry.max_attempts = 3;
    let mut source = RestApiSource::new(cfg).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(batches.is_empty());
    let err = err.expect("malformed body");
    let text = err.to_string();
    assert!(
        text.contains("not JSON") && text.contains("HTTP 200 OK"),
        "{text}"
    );
    assert!(
        text.contains("/items/page?") && text.contains("<html>") && text.contains("3 attempts"),
        "{text}"
    );
    assert!(matches!(
        err,
        Error::Source {
            retry: Retry::Permanent,
            source: Some(_),
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_retried_then_a_transient_error_keeps_the_cause() {
    let mut cfg = RestApiSourceConfig::new(TestApi::refused_url("/items/page"), schema());
    cfg.retry.max_attempts = 3;
    cfg.retry.initial_delay = Duration::from_millis(10);
    cfg.retry.max_delay = Duration::from_millis(40);
    let mut source = RestApiSource::new(cfg).unwrap();
    let (_, err) = read(&mut source, backfill()).await;
    let err = err.expect("connection refused");
    assert!(
        matches!(
            err,
            Error::Source {
                retry: Retry::Transient,
                source: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("Connection refused") && text.contains("after 3 attempts over"),
        "{text}"
    );
    // The cause chain is the error's source too (not repeated by the report).
    let report = err.report();
    assert_eq!(report.matches("Connection refused").count(), 1, "{report}");

    // A page that does not exist is permanent at once, naming the URL.
    let api = TestApi::start(5);
    let mut source = RestApiSource::new(RestApiSourceConfig::new(
        api.url("/items/nowhere"),
        schema(),
    ))
    .unwrap();
    let (_, err) = read(&mut source, backfill()).await;
    let err = err.expect("404");
    assert!(
        matches!(
            err,
            Error::Source {
                retry: Retry::Permanent,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("/items/nowhere") && err.to_string().contains("404"),
        "{err}"
    );
    assert_eq!(api.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_fit_the_schema_are_dead_lettered_and_the_rest_lands() {
    let api = TestApi::start(50);
    api.set_bad_ids(vec![7, 40]);
    let mut source = RestApiSource::new(config(&api, "offset", 20)).unwrap();
    let (batches, err) = read(&mut source, backfill()).await;
    assert!(err.is_none(), "{err:?}");
    let expected: Vec<i64> = (1..=50).filter(|i| *i != 7 && *i != 40).collect();
    assert_eq!(ids(&batches), expected);
    let letters: Vec<_> = batches
        .iter()
        .flat_map(|b| b.dead_letters.clone())
        .collect();
    assert_eq!(letters.len(), 2, "{letters:#?}");
    assert_eq!(letters[0].locator, "page 1 record 6");
    assert_eq!(letters[1].locator, "page 2 record 19");
    assert!(letters[0].reason.contains("amount"), "{letters:#?}");
    assert!(letters[0].origin.contains("/items/offset"));
    assert!(
        letters[0]
            .payload
            .as_deref()
            .unwrap()
            .contains("not a number")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_size_limit_fail_and_requests_respect_the_rate_limit() {
    let api = TestApi::start(40);
    let mut cfg = config(&api, "page", 20);
    cfg.max_response_bytes = 1000;
    let mut source = RestApiSource::new(cfg).unwrap();
    let (_, err) = read(&mut source, backfill()).await;
    let text = err.expect("too large").to_string();
    assert!(text.contains("maxResponseBytes"), "{text}");

    let mut cfg = config(&api, "page", 5);
    cfg.max_requests_per_second = Some(20.0);
    let before = api.stats().requests;
    let mut source = RestApiSource::new(cfg).unwrap();
    let started = std::time::Instant::now();
    let (batches, err) = read(&mut source, backfill()).await;
    let took = started.elapsed();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&batches).len(), 40);
    // 9 requests (8 pages and the empty one) at most 20 per second: the 9th cannot start
    // before 8 intervals of 50 ms have passed. (A lower bound: timing jitter cannot break it.)
    assert_eq!(api.stats().requests - before, 9);
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[test]
fn bad_settings_are_errors_naming_the_field() {
    let base = || RestApiSourceConfig::new("http://127.0.0.1:1/x", schema());
    let check = |c: RestApiSourceConfig, field: &str| {
        let err = RestApiSource::new_at(c, "spec.source").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("spec.source.{field}: ")),
            "{err}"
        );
    };
    let mut c = base();
    c.url = "ftp://x/y".into();
    check(c, "url");
    let mut c = base();
    c.url = "https://user:pw@x/y".into();
    check(c, "url");
    let mut c = base();
    c.records_pointer = "data".into();
    check(c, "recordsPointer");
    let mut c = base();
    c.schema[1].data_type = "timestamp[weeks]".into();
    check(c, "schema[1].type");
    let mut c = base();
    c.max_requests_per_second = Some(0.0);
    check(c, "maxRequestsPerSecond");
    let mut c = base();
    c.watermark = Some(WatermarkConfig {
        field: "updated_at".into(),
        kind: WatermarkKind::Timestamp,
        id_field: None,
        start: Some(serde_json::json!("yesterday")),
    });
    check(c, "watermark.start");
    // Unknown keys in a spec are rejected by name.
    let err = serde_json::from_value::<RestApiSourceConfig>(serde_json::json!({
        "url": "http://x", "schema": [], "pageSize": 3
    }))
    .unwrap_err();
    assert!(err.to_string().contains("pageSize"), "{err}");
}

#[tokio::test]
async fn streaming_without_a_watermark_is_a_config_error() {
    let api = TestApi::start(1);
    let mut cfg = config(&api, "page", 10);
    cfg.watermark = None;
    let mut source = RestApiSource::new_at(cfg, "spec.source").unwrap();
    let err = source.open(SourceStart::default()).await.err().unwrap();
    assert!(
        err.to_string().starts_with("spec.source.watermark: "),
        "{err}"
    );
}

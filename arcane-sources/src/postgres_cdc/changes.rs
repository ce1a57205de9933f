//! The change stream: the slot's `pgoutput` messages, polled with
//! `pg_logical_slot_peek_binary_changes`, turned into rows in commit order.

use std::time::Duration;

use arcane_core::Error;
use futures::StreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::client::{WorkError, WorkResult, slot_busy};
use super::pgoutput::{self, Lsn, Message, Value};
use super::position::{ParsedSnapshot, Segment, TxProgress};
use super::rows::KeyCol;
use super::slot::advance_slot;
use super::source::{REPLICATION_LAG_BYTES, REPLICATION_LAG_SECONDS, SLOT_RETAINED_WAL_BYTES};
use super::worker::Worker;

/// Peek every change of the publication up to `$2` without consuming the slot.
const PEEK: &str = "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL, \
                    'proto_version', '1', 'publication_names', $3)";

/// How often the retained-WAL warning repeats while it holds.
const RETAINED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long to wait when the slot is held by another backend for a moment.
const SLOT_BUSY_WAIT: Duration = Duration::from_millis(100);

/// How one peek of the slot ended.
enum Peeked {
    /// The slot was held by another backend (e.g. the last peek of a process that just
    /// stopped): poll again shortly.
    Busy,
    /// Every transaction committed up to the peek's end was read.
    Read(ReadStats),
}

/// What a peek read.
#[derive(Default)]
struct ReadStats {
    /// Rows sent downstream while reading (full batches).
    sent_rows: usize,
    /// Commit time of the last transaction read.
    last_commit_ts: Option<i64>,
}

impl Worker {
    /// Poll the slot with `pg_logical_slot_peek_binary_changes` until the stream is dropped.
    pub(super) async fn stream(&mut self, client: &Client) -> WorkResult<()> {
        let peek = client.prepare(PEEK).await?;
        loop {
            self.advance_pending(client).await?;
            let upto = self.server_position(client).await?;
            let before = self.pos.clone();
            let stats = match self.read_changes(client, &peek, upto).await? {
                Peeked::Busy => {
                    tokio::time::sleep(SLOT_BUSY_WAIT).await;
                    continue;
                }
                Peeked::Read(stats) => stats,
            };
            self.caught_up(upto, stats.last_commit_ts);
            let rows = self.rows.len();
            if rows > 0 || (self.pos != before && self.sent.as_ref() != Some(&self.pos)) {
                self.send().await?;
            }
            if stats.sent_rows + rows == 0 {
                tokio::time::sleep(self.settings.config.poll_interval).await;
            }
        }
    }

    /// Advance the slot to what the sink committed, if [`Source::commit`] could not (the
    /// slot was busy with this worker's peek).
    ///
    /// [`Source::commit`]: arcane_core::Source::commit
    async fn advance_pending(&self, client: &Client) -> WorkResult<()> {
        let pending = self
            .shared
            .pending_advance
            .lock()
            .map(|mut p| p.take())
            .unwrap_or(None);
        let Some(lsn) = pending else { return Ok(()) };
        match advance_slot(client, &self.settings.config.slot, lsn).await {
            Err(e) if slot_busy(&e) => {
                if let Ok(mut p) = self.shared.pending_advance.lock() {
                    p.get_or_insert(lsn);
                }
                Ok(())
            }
            other => other,
        }
    }

    /// The server's current WAL position (what this poll reads up to); sets the lag gauge.
    async fn server_position(&mut self, client: &Client) -> WorkResult<Lsn> {
        let slot = &self.settings.config.slot.clone();
        let row = client
            .query_one(
                "SELECT pg_current_wal_lsn()::text, s.confirmed_flush_lsn::text, \
                        pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::float8 \
                 FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
                &[slot],
            )
            .await?;
        let retained = row.get::<_, Option<f64>>(2).unwrap_or(0.0).max(0.0);
        metrics::gauge!(SLOT_RETAINED_WAL_BYTES, self.labels.to_vec()).set(retained);
        self.warn_retained(retained);
        let upto = Lsn::parse(row.get::<_, &str>(0)).unwrap_or_default();
        let Some(confirmed) = row.get::<_, Option<&str>>(1).and_then(Lsn::parse) else {
            return Err(Error::source_permanent(
                &self.name,
                format!("replication slot {slot} disappeared; the changes it held are lost; backfill the stream"),
            )
            .into());
        };
        metrics::gauge!(REPLICATION_LAG_BYTES, self.labels.to_vec())
            .set(upto.0.saturating_sub(confirmed.0) as f64);
        Ok(upto)
    }

    /// WARN (at most once a minute) while the slot retains more WAL than
    /// `retainedWalWarningBytes`.
    fn warn_retained(&mut self, retained: f64) {
        let limit = self.settings.config.retained_wal_warning_bytes;
        if limit == 0 || retained <= limit as f64 {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .retained_warned
            .is_some_and(|at| now.duration_since(at) < RETAINED_WARNING_EVERY)
        {
            return;
        }
        self.retained_warned = Some(now);
        tracing::warn!(
            source = %self.name,
            slot = %self.settings.config.slot,
            retained_bytes = retained as u64,
            limit_bytes = limit,
            "the replication slot retains more WAL than spec.source.retainedWalWarningBytes: the server keeps it on disk until this stream commits; check that the stream's commits succeed (its sink) and keep up; a retired stream's slot is dropped with `arcane retire`"
        );
    }

    /// Read the slot's messages up to `upto`, sending full batches on the way.
    async fn read_changes(
        &mut self,
        client: &Client,
        peek: &Statement,
        upto: Lsn,
    ) -> WorkResult<Peeked> {
        let cfg = &self.settings.config;
        let params = [cfg.slot.clone(), upto.to_string(), cfg.publication.clone()];
        let rows = match client.query_raw(peek, &params).await {
            Ok(rows) => rows,
            Err(e) => return busy_or(WorkError::Pg(e)),
        };
        futures::pin_mut!(rows);
        let mut tx: Option<CurTx> = None;
        let mut stats = ReadStats::default();
        let mut first = true;
        while let Some(row) = rows.next().await {
            // The slot can still be held by the backend of a process that just stopped (its
            // last peek running on); the error arrives with the first row.
            let row = match row {
                Ok(row) => row,
                Err(e) if first => return busy_or(WorkError::Pg(e)),
                Err(e) => return Err(e.into()),
            };
            first = false;
            let change_lsn = Lsn::parse(row.get::<_, &str>(0)).unwrap_or_default();
            let msg = pgoutput::decode(row.get(1)).map_err(|e| {
                Error::source_permanent(
                    &self.name,
                    format!("cannot decode pgoutput message at {change_lsn}: {}", e.0),
                )
            })?;
            self.on_message(msg, change_lsn, &mut tx, &mut stats)
                .await?;
        }
        Ok(Peeked::Read(stats))
    }

    /// Handle one `pgoutput` message; `tx` is the transaction being read.
    async fn on_message(
        &mut self,
        msg: Message<'_>,
        change_lsn: Lsn,
        tx: &mut Option<CurTx>,
        stats: &mut ReadStats,
    ) -> WorkResult<()> {
        let oid = self.table.oid;
        match msg {
            Message::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                *tx = Some(self.begin(final_lsn, commit_ts_us, xid));
                Ok(())
            }
            Message::Commit { end_lsn, .. } => self.commit_tx(tx.take(), end_lsn, stats).await,
            Message::Relation { relid, columns, .. } if relid == oid => {
                if tx.as_ref().is_none_or(|t| !t.skip) {
                        self.apply_relation(&columns).await?;
                }
                Ok(())
            }
            Message::Insert { relid, new } if relid == oid => match tx.as_mut() {
                Some(t) => self.change(t, "c", change_lsn, &new, None).await,
                None => Ok(()),
            },
            Message::Update { relid, old, new } if relid == oid => match tx.as_mut() {
                Some(t) => self.change(t, "u", change_lsn, &new, old.as_deref()).await,
                None => Ok(()),
            },
            Message::Delete { relid, old } if relid == oid => match tx.as_mut() {
                Some(t) => self.change(t, "d", change_lsn, &old, None).await,
                None => Ok(()),
            },
            Message::Truncate { relids }
                if relids.contains(&oid) && tx.as_ref().is_some_and(|t| !t.skip) =>
            {
                Err(Error::SchemaMismatch {
                    location: format!("postgres table {}", self.qualified),
                    message: format!("the table was truncated (at {change_lsn}); backfill the stream to take a new snapshot"),
                }
                .into())
            }
            _ => Ok(()),
        }
    }

    /// A transaction starts: skip it if the position already covers it, and note how many of
    /// its rows the position covers when it ends inside it.
    fn begin(&self, final_lsn: Lsn, commit_ts_us: i64, xid: u32) -> CurTx {
        let already = match self.pos.tx {
            Some(t) if t.commit_lsn == final_lsn => t.rows,
            _ => 0,
        };
        CurTx {
            final_lsn,
            commit_ts_us,
            xid,
            skip: final_lsn < self.pos.lsn,
            already,
            count: 0,
        }
    }

    /// A transaction ends: the position moves past it; a full batch is sent.
    async fn commit_tx(
        &mut self,
        tx: Option<CurTx>,
        end_lsn: Lsn,
        stats: &mut ReadStats,
    ) -> WorkResult<()> {
        if let Some(t) = tx.filter(|t| !t.skip) {
            self.pos.lsn = end_lsn;
            self.pos.tx = None;
            stats.last_commit_ts = Some(t.commit_ts_us);
        }
        if self.rows.len() >= self.settings.config.batch_rows {
            stats.sent_rows += self.rows.len();
            return self.send().await;
        }
        Ok(())
    }

    /// Every transaction committed before `upto` was read: the position moves to it, and the
    /// snapshot segments no change can need any more are forgotten.
    fn caught_up(&mut self, upto: Lsn, last_commit_ts: Option<i64>) {
        if self.pos.tx.is_none() && upto > self.pos.lsn {
            self.pos.lsn = upto;
        }
        let lsn = self.pos.lsn;
        self.pos.segments.retain(|s| s.wal_end > lsn);
        metrics::gauge!(REPLICATION_LAG_SECONDS, self.labels.to_vec()).set(match last_commit_ts {
            Some(ts) => (chrono::Utc::now().timestamp_micros() - ts).max(0) as f64 / 1e6,
            None => 0.0,
        });
    }

    /// Handle one change of the captured table.
    async fn change(
        &mut self,
        t: &mut CurTx,
        op: &str,
        lsn: Lsn,
        values: &[Value<'_>],
        old: Option<&[Value<'_>]>,
    ) -> WorkResult<()> {
        if t.skip {
            return Ok(());
        }
        if self.in_snapshot(t.xid, t.final_lsn, values).await? {
            return Ok(());
        }
        t.count += 1;
        if t.count <= t.already {
            return Ok(());
        }
        self.pos.tx = Some(TxProgress {
            commit_lsn: t.final_lsn,
            rows: t.count,
        });
        let mut texts: Vec<Option<&str>> = vec![None; self.table.columns.len()];
        let mut unchanged: Vec<&str> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let Some(Some(out)) = self.mapping.get(i) else {
                continue;
            };
            texts[*out] = match v {
                Value::Text(s) => Some(s),
                Value::Null => None,
                // An unchanged TOASTed value is not sent; the old row has it with REPLICA
                // IDENTITY FULL, else the row says the value is unavailable (never a silent null).
                Value::Unchanged => match old.and_then(|o| o.get(i)) {
                    Some(Value::Text(s)) => Some(s),
                    _ => {
                        unchanged.push(&self.table.columns[*out].name);
                        None
                    }
                },
            };
        }
        if let Err(reason) = self.rows.append(
            |i| texts[i],
            &unchanged,
            op,
            lsn,
            Some(t.commit_ts_us),
            Some(t.xid),
            &self.table.columns,
        ) {
            self.dead_letter(&format!("change at {lsn} (xid {})", t.xid), reason);
        }
        if self.rows.len() >= self.settings.config.batch_rows {
            return self.send().await;
        }
        Ok(())
    }

    /// Is this change already in the snapshot rows (its transaction visible in the snapshot
    /// that read the row's key range)?
    ///
    /// Usually every segment gives the same answer (one segment, or a transaction committed
    /// before all of them or after all of them), and the key is not needed. Otherwise the
    /// server compares the change's key with the segments' bounds (with the key columns' own
    /// types and collations). Without a key (a table read by `ctid` ranges), or when the
    /// change lacks its key, the first segment decides: the change is emitted unless the first
    /// snapshot saw it, so an interrupted keyless snapshot is resumed at least once, never
    /// losing a change.
    async fn in_snapshot(
        &mut self,
        xid: u32,
        final_lsn: Lsn,
        values: &[Value<'_>],
    ) -> WorkResult<bool> {
        let answer = |s: &Segment| {
            final_lsn < s.wal_end
                && ParsedSnapshot::parse(&s.snapshot).is_some_and(|p| p.visible(xid))
        };
        let segments = self.pos.segments.clone();
        let Some(first) = segments.first().map(answer) else {
            return Ok(false);
        };
        if segments.iter().all(|s| answer(s) == first) {
            return Ok(first);
        }
        let Some(key) = self.table.key.clone() else {
            return Ok(first);
        };
        let texts: Option<Vec<&str>> = key
            .iter()
            .map(|k| {
                let i = self.mapping.iter().position(|m| *m == Some(k.index))?;
                match values.get(i) {
                    Some(Value::Text(s)) => Some(*s),
                    _ => None,
                }
            })
            .collect();
        let Some(texts) = texts else {
            return Ok(first);
        };
        // Not the polling connection: its peek's rows are being read.
        let client = self.aux_client().await?;
        for s in segments.iter().rev() {
            match s.key() {
                None => return Ok(answer(s)),
                Some(after) if key_after(client, &key, &texts, &after).await? => {
                    return Ok(answer(s));
                }
                Some(_) => {}
            }
        }
        Ok(false)
    }
}

/// Whether the key `texts` sorts after `after`, compared by the server as rows of the key
/// columns' types and collations (what the snapshot's keyset pagination compares).
async fn key_after(
    client: &Client,
    key: &[KeyCol],
    texts: &[&str],
    after: &[String],
) -> WorkResult<bool> {
    if after.len() != key.len() {
        return Ok(false);
    }
    let side = |offset: usize| {
        key.iter()
            .enumerate()
            .map(|(i, k)| format!("${}::text::{}{}", i + 1 + offset, k.sql_type, k.collate))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = format!("SELECT ROW({}) > ROW({})", side(0), side(key.len()));
    let mut params: Vec<&(dyn ToSql + Sync)> =
        texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
    params.extend(after.iter().map(|a| a as &(dyn ToSql + Sync)));
    Ok(client.query_one(&sql, &params).await?.get(0))
}

struct CurTx {
    final_lsn: Lsn,
    commit_ts_us: i64,
    xid: u32,
    skip: bool,
    already: u64,
    count: u64,
}

/// A slot held by another backend is worth a new poll; anything else is an error.
fn busy_or(e: WorkError) -> WorkResult<Peeked> {
    if slot_busy(&e) {
        Ok(Peeked::Busy)
    } else {
        Err(e)
    }
}

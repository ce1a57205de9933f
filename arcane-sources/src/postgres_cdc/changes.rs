//! The change stream: the slot's `pgoutput` messages over the streaming replication protocol
//! ([`replication`](super::replication)), turned into rows in commit order.

use std::time::{Duration, Instant};

use arcane_core::Error;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::client::{WorkError, WorkResult, within};
use super::pgoutput::{self, Lsn, Message, Value};
use super::position::{ParsedSnapshot, Segment, TxProgress};
use super::replication::{self, ReplError, ReplEvent, ReplStream};
use super::rows::KeyCol;
use super::source::{REPLICATION_LAG_BYTES, REPLICATION_LAG_SECONDS, SLOT_RETAINED_WAL_BYTES};
use super::worker::Worker;

/// How often the retained-WAL warning repeats while it holds.
const RETAINED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long to wait when the slot is held by another backend for a moment.
const SLOT_BUSY_WAIT: Duration = Duration::from_millis(100);

/// How long a start waits for another connection (e.g. the walsender of a process that was
/// just killed) to release the slot before it counts as a failed attempt.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(30);

impl Worker {
    /// Stream the slot's changes until the stream is dropped: `pgoutput` messages as they
    /// are committed, a partial batch (or the position alone) sent every `pollInterval`.
    /// The slot moves only when the sink commits ([`Feedback::committed`]).
    ///
    /// [`Feedback::committed`]: super::replication::Feedback::committed
    pub(super) async fn stream(&mut self, client: &Client) -> WorkResult<()> {
        let mut repl = self.start_replication().await?;
        if self.sent.is_none() {
            // The position the stream resumed from is committed already.
            self.sent = Some(self.pos.clone());
        }
        let mut tx: Option<CurTx> = None;
        // Commit time of the last transaction read since the last keepalive.
        let mut last_commit_ts: Option<i64> = None;
        let mut tick = tokio::time::interval(self.settings.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle = self.settings.config.idle_timeout;
        let mut waiting_since = Instant::now();
        let mut last_heartbeat = Instant::now();
        loop {
            tokio::select! {
                event = repl.next() => {
                    let event = event.map_err(|e| self.repl_error(e, "streaming changes"))?;
                    match event {
                        ReplEvent::Data { start, data } => {
                            let msg = pgoutput::decode(&data).map_err(|e| {
                                Error::source_permanent(
                                    &self.name,
                                    format!("cannot decode pgoutput message at {start}: {}", e.0),
                                )
                            })?;
                            self.on_message(client, msg, start, &mut tx, &mut last_commit_ts)
                                .await?;
                        }
                        // Every transaction committed before `end` was sent.
                        ReplEvent::Keepalive { end } if tx.is_none() => {
                            self.caught_up(end, last_commit_ts.take());
                        }
                        ReplEvent::Keepalive { .. } => {}
                    }
                    waiting_since = Instant::now();
                }
                _ = tick.tick() => {
                    if waiting_since.elapsed() > idle {
                        return Err(Error::source_transient(
                            &self.name,
                            format!(
                                "no message on the replication connection for {}s (spec.source.idleTimeout; not even the keepalive a status update asks for); reconnecting",
                                idle.as_secs_f64()
                            ),
                            std::io::Error::from(std::io::ErrorKind::TimedOut),
                        )
                        .into());
                    }
                    within(idle, async {
                        self.refresh_slot_gauges(client).await?;
                        self.heartbeat(client, &mut last_heartbeat).await
                    })
                    .await?;
                    // Between transactions: a transaction's rows go out together (or in
                    // `batchRows` parts), as it arrives at once.
                    if tx.is_none() && (self.rows.len() > 0 || self.sent.as_ref() != Some(&self.pos)) {
                        self.send().await?;
                    }
                }
            }
        }
    }

    /// `START_REPLICATION` on the slot, waiting a while for another connection to release it.
    async fn start_replication(&mut self) -> WorkResult<ReplStream> {
        let deadline = Instant::now() + SLOT_RELEASE_WAIT;
        // The SQL sessions' name, by which `arcane retire` tells a running stream.
        let application = self
            .settings
            .pg
            .get_application_name()
            .unwrap_or("arcane postgres-cdc")
            .to_string();
        let idle = self.settings.config.idle_timeout;
        loop {
            let starting = replication::start(&self.settings, &application, self.feedback.clone());
            let Ok(started) = tokio::time::timeout(idle, starting).await else {
                return Err(WorkError::TimedOut(idle));
            };
            match started {
                Ok(stream) => {
                    tracing::info!(source = %self.name, slot = %self.settings.config.slot, from = %self.pos.lsn, "streaming replication started");
                    return Ok(stream);
                }
                Err(e) if e.slot_busy() && Instant::now() < deadline => {
                    tokio::time::sleep(SLOT_BUSY_WAIT).await;
                }
                Err(e) if e.slot_busy() => {
                    return Err(Error::source_transient(
                        &self.name,
                        format!(
                            "replication slot {} stayed in use by another connection for {}s: another stream or client reads it (give each stream its own spec.source.slot), or the server has not yet noticed that an earlier runner is gone (wal_sender_timeout)",
                            self.settings.config.slot,
                            SLOT_RELEASE_WAIT.as_secs()
                        ),
                        e,
                    )
                    .into());
                }
                Err(e) => return Err(self.repl_error(e, "starting streaming replication").into()),
            }
        }
    }

    /// With `heartbeatInterval`, write a WAL record in the captured database (a
    /// non-transactional logical message, which `pgoutput` does not pass on) once per interval,
    /// so that the server has WAL of this database to decode and the slot's position moves
    /// even when every write of the cluster goes to other databases.
    async fn heartbeat(&self, client: &Client, last: &mut Instant) -> WorkResult<()> {
        let Some(every) = self.settings.config.heartbeat_interval else {
            return Ok(());
        };
        if last.elapsed() < every {
            return Ok(());
        }
        *last = Instant::now();
        client
            .execute(
                "SELECT pg_logical_emit_message(false, 'arcane.heartbeat', '')",
                &[],
            )
            .await
            .map_err(|e| {
                super::client::pg_err(
                    &self.name,
                    "writing the heartbeat (spec.source.heartbeatInterval; the user needs EXECUTE on pg_logical_emit_message, or leave heartbeatInterval out)",
                    e,
                )
            })?;
        Ok(())
    }

    fn repl_error(&self, e: ReplError, what: &str) -> Error {
        e.into_error(&self.name, Some(&self.settings.config.slot), what)
    }

    /// Set the retained-WAL and lag gauges from the server's position and the slot's (warning
    /// past `retainedWalWarningBytes`); a slot that disappeared is an error.
    async fn refresh_slot_gauges(&mut self, client: &Client) -> WorkResult<()> {
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
        Ok(())
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

    /// Handle one `pgoutput` message; `tx` is the transaction being read; `client` the SQL
    /// connection (free while the replication connection streams).
    async fn on_message(
        &mut self,
        client: &Client,
        msg: Message<'_>,
        change_lsn: Lsn,
        tx: &mut Option<CurTx>,
        last_commit_ts: &mut Option<i64>,
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
            Message::Commit { end_lsn, .. } => {
                self.commit_tx(tx.take(), end_lsn, last_commit_ts).await
            }
            Message::Relation { relid, columns, .. } if relid == oid => {
                if tx.as_ref().is_none_or(|t| !t.skip) {
                    self.apply_relation(client, &columns).await?;
                }
                Ok(())
            }
            Message::Insert { relid, new } if relid == oid => match tx.as_mut() {
                Some(t) => self.change(client, t, "c", change_lsn, &new, None).await,
                None => Err(self.outside_transaction(change_lsn)),
            },
            Message::Update { relid, old, new } if relid == oid => match tx.as_mut() {
                Some(t) => {
                    self.change(client, t, "u", change_lsn, &new, old.as_deref())
                        .await
                }
                None => Err(self.outside_transaction(change_lsn)),
            },
            Message::Delete { relid, old } if relid == oid => match tx.as_mut() {
                Some(t) => self.change(client, t, "d", change_lsn, &old, None).await,
                None => Err(self.outside_transaction(change_lsn)),
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

    /// A change that no Begin message opened: never sent by `pgoutput`; refused rather than
    /// dropped or emitted without its transaction.
    fn outside_transaction(&self, lsn: Lsn) -> super::client::WorkError {
        Error::source_permanent(
            &self.name,
            format!("a change of table {} at {lsn} arrived outside a transaction (no Begin message); the stream cannot place it; report this with the server's version", self.qualified),
        )
        .into()
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
        last_commit_ts: &mut Option<i64>,
    ) -> WorkResult<()> {
        if let Some(t) = tx.filter(|t| !t.skip) {
            self.pos.lsn = end_lsn;
            self.pos.tx = None;
            *last_commit_ts = Some(t.commit_ts_us);
        }
        if self.rows.len() >= self.settings.config.batch_rows {
            return self.send().await;
        }
        Ok(())
    }

    /// Every transaction committed before `upto` was read: the position moves to it, and the
    /// snapshot segments are forgotten once no change can need them.
    fn caught_up(&mut self, upto: Lsn, last_commit_ts: Option<i64>) {
        if self.pos.tx.is_none() && upto > self.pos.lsn {
            self.pos.lsn = upto;
        }
        // Once every segment ended before the position, no change can be in a snapshot any
        // more. A segment is never dropped alone: the key range it read would then fall to
        // another segment, whose answer differs (a keepalive can move the position past the
        // first segment's end before the changes after it are read).
        let lsn = self.pos.lsn;
        if self.pos.segments.iter().all(|s| s.wal_end <= lsn) {
            self.pos.segments.clear();
        }
        metrics::gauge!(REPLICATION_LAG_SECONDS, self.labels.to_vec()).set(match last_commit_ts {
            Some(ts) => (chrono::Utc::now().timestamp_micros() - ts).max(0) as f64 / 1e6,
            None => 0.0,
        });
    }

    /// Handle one change of the captured table.
    #[allow(clippy::too_many_arguments)]
    async fn change(
        &mut self,
        client: &Client,
        t: &mut CurTx,
        op: &str,
        lsn: Lsn,
        values: &[Value<'_>],
        old: Option<&[Value<'_>]>,
    ) -> WorkResult<()> {
        if t.skip {
            return Ok(());
        }
        if self.in_snapshot(client, t.xid, t.final_lsn, values).await? {
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
    /// change lacks its key, the change is emitted unless every snapshot saw it (in one run the
    /// first, earliest snapshot; the shards of a sharded backfill took theirs in any order), so
    /// an interrupted or sharded keyless snapshot is read at least once, never losing a change.
    async fn in_snapshot(
        &mut self,
        client: &Client,
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
        // Without a key to place the change, it is skipped only when every snapshot saw it.
        let every = segments.iter().all(answer);
        let Some(key) = self.table.key.clone() else {
            return Ok(every);
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
            return Ok(every);
        };
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

//! The checks a stream passes before it creates anything on the server: the table, its
//! replica identity, the user's privileges, `wal_level`, the publication and a free slot.
//!
//! A publication `FOR TABLE` that publishes updates and deletes of a table without a replica
//! identity makes the application's own `UPDATE`/`DELETE` on it fail, and an idle slot pins WAL:
//! so every refusal happens here, before either is created.

use arcane_core::{Error, Result};
use tokio_postgres::Client;

use super::client::pg_err;
use super::rows::{ReplicaIdentity, TableInfo};
use super::slot::SlotSetup;

/// What the checks found that creating things depends on.
#[derive(Debug)]
pub(super) struct Checked {
    /// The publication does not exist and is to be created.
    pub(super) create_publication: bool,
}

/// The publication as it is on the server.
struct Publication {
    all_tables: bool,
    has_table: bool,
    insert: bool,
    update: bool,
    delete: bool,
}

impl SlotSetup<'_> {
    fn field(&self, f: &str) -> String {
        format!("{}.{f}", self.prefix)
    }

    /// Check everything a run needs before anything is created; a refusal is a config error
    /// (FATAL) naming the table or setting and the fix.
    pub(super) async fn preflight(&self, client: &Client, info: &TableInfo) -> Result<Checked> {
        let cfg = &self.settings.config;
        let table = self.qualified();
        let row = client
            .query_one(
                "SELECT current_user::text, r.rolsuper, r.rolreplication, \
                        has_table_privilege(c.oid, 'SELECT'), pg_has_role(c.relowner, 'USAGE'), \
                        has_database_privilege(current_database(), 'CREATE'), \
                        current_setting('wal_level') \
                 FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = $1",
                &[&info.oid],
            )
            .await
            .map_err(|e| pg_err(self.name, "checking privileges", e))?;
        let user: String = row.get(0);
        let (superuser, replication, select, owner, create_db): (bool, bool, bool, bool, bool) =
            (row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        let wal_level: String = row.get(6);
        if wal_level != "logical" {
            return Err(Error::config(
                self.field("connection"),
                format!(
                    "the server has wal_level = {wal_level}; logical decoding needs wal_level = logical: run ALTER SYSTEM SET wal_level = logical and restart the server"
                ),
            ));
        }
        if !superuser && !replication {
            return Err(Error::config(
                self.field("connection"),
                format!(
                    "user {user} has neither the REPLICATION attribute nor superuser, which reading a replication slot needs; run ALTER ROLE {user} REPLICATION (or connect as a user that has it)"
                ),
            ));
        }
        if !superuser && !select {
            return Err(Error::config(
                self.field("table"),
                format!(
                    "user {user} may not SELECT from table {table}; run GRANT SELECT ON {table} TO {user}"
                ),
            ));
        }
        if !cfg.insert_only && !info.replicates_updates() {
            return Err(Error::config(self.field("table"), self.no_identity(info)));
        }
        let publication = self.publication(client).await?;
        let create_publication = match publication {
            Some(p) => {
                self.check_publication(&p, info)?;
                false
            }
            None if !cfg.create_publication => {
                return Err(Error::config(
                    self.field("publication"),
                    format!(
                        "publication {} does not exist; create it ({}) or set createPublication: true",
                        cfg.publication,
                        self.create_publication_sql()
                    ),
                ));
            }
            None if !(superuser || (owner && create_db)) => {
                return Err(Error::config(
                    self.field("publication"),
                    format!(
                        "publication {} does not exist and user {user} may not create it (that needs ownership of table {table} and CREATE on the database); have the table's owner run {}, or set createPublication: false once it exists",
                        cfg.publication,
                        self.create_publication_sql()
                    ),
                ));
            }
            None => true,
        };
        Ok(Checked { create_publication })
    }

    /// Why a table's updates and deletes cannot be captured, and what to run.
    fn no_identity(&self, info: &TableInfo) -> String {
        let table = self.qualified();
        let why = match info.identity {
            ReplicaIdentity::Nothing => "has REPLICA IDENTITY NOTHING".to_string(),
            ReplicaIdentity::Index => {
                "has REPLICA IDENTITY USING INDEX but that index no longer exists".to_string()
            }
            _ => "has no primary key and REPLICA IDENTITY DEFAULT".to_string(),
        };
        format!(
            "table {table} {why}, so PostgreSQL cannot publish its updates and deletes (a publication that did would make the application's own UPDATE and DELETE on it fail); run ALTER TABLE {table} REPLICA IDENTITY FULL (or ALTER TABLE {table} REPLICA IDENTITY USING INDEX <a unique index on NOT NULL columns>), or set insertOnly: true to capture its snapshot and inserts only"
        )
    }

    /// The publication's definition, `None` when it does not exist.
    async fn publication(&self, client: &Client) -> Result<Option<Publication>> {
        let cfg = &self.settings.config;
        let row = client
            .query_opt(
                "SELECT p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, \
                        EXISTS (SELECT 1 FROM pg_publication_tables t WHERE t.pubname = p.pubname \
                                AND t.schemaname = $2 AND t.tablename = $3) \
                 FROM pg_publication p WHERE p.pubname = $1",
                &[
                    &cfg.publication,
                    &self.settings.schema,
                    &self.settings.table,
                ],
            )
            .await
            .map_err(|e| pg_err(self.name, "reading publications", e))?;
        Ok(row.map(|r| Publication {
            all_tables: r.get(0),
            insert: r.get(1),
            update: r.get(2),
            delete: r.get(3),
            has_table: r.get(4),
        }))
    }

    /// An existing publication must publish the table's inserts, and its updates and deletes
    /// exactly when they are captured (and can be).
    fn check_publication(&self, p: &Publication, info: &TableInfo) -> Result<()> {
        let cfg = &self.settings.config;
        let (name, table) = (&cfg.publication, self.qualified());
        let refuse = |message: String| Err(Error::config(self.field("publication"), message));
        if !p.all_tables && !p.has_table {
            return refuse(format!(
                "publication {name} does not include table {table}; run ALTER PUBLICATION {name} ADD TABLE {table}"
            ));
        }
        if !p.insert {
            return refuse(format!(
                "publication {name} does not publish inserts; run ALTER PUBLICATION {name} SET (publish = '{}')",
                self.publish()
            ));
        }
        if (p.update || p.delete) && !info.replicates_updates() {
            return refuse(format!(
                "publication {name} publishes updates or deletes of table {table}, which has no replica identity, so the application's UPDATE and DELETE on it fail; run ALTER TABLE {table} REPLICA IDENTITY FULL, or ALTER PUBLICATION {name} SET (publish = 'insert, truncate') with insertOnly: true"
            ));
        }
        if !(cfg.insert_only || (p.update && p.delete)) {
            return refuse(format!(
                "publication {name} does not publish updates and deletes, so the stream would miss them; run ALTER PUBLICATION {name} SET (publish = 'insert, update, delete, truncate'), or set insertOnly: true"
            ));
        }
        Ok(())
    }

    /// The operations the publication publishes.
    pub(super) fn publish(&self) -> &'static str {
        // TRUNCATE is published too (it needs no replica identity), so that a truncated table
        // is a schema mismatch rather than rows silently gone.
        if self.settings.config.insert_only {
            "insert, truncate"
        } else {
            "insert, update, delete, truncate"
        }
    }

    /// The statement creating the publication.
    pub(super) fn create_publication_sql(&self) -> String {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = '{}')",
            self.settings.config.publication,
            self.qualified(),
            self.publish()
        )
    }

    /// When a new slot is needed: refuse if every replication slot is taken.
    pub(super) async fn check_free_slot(&self, client: &Client) -> Result<()> {
        let row = client
            .query_one(
                "SELECT current_setting('max_replication_slots')::int, \
                        (SELECT count(*) FROM pg_replication_slots)::int",
                &[],
            )
            .await
            .map_err(|e| pg_err(self.name, "counting replication slots", e))?;
        let (max, used): (i32, i32) = (row.get(0), row.get(1));
        if used >= max {
            return Err(Error::config(
                self.field("slot"),
                format!(
                    "all {max} replication slots of the server are in use (max_replication_slots = {max}), so slot {} cannot be created; drop an unused one (SELECT slot_name, active FROM pg_replication_slots; SELECT pg_drop_replication_slot('name'), or `arcane retire` for a retired stream) or raise max_replication_slots (a server restart)",
                    self.settings.config.slot
                ),
            ));
        }
        Ok(())
    }
}

//! The catalogs an Iceberg table can be registered in, behind one type: the SQL catalog on
//! PostgreSQL ([`super::catalog`]) and an Iceberg REST catalog ([`super::rest`]). The
//! publishing logic (`super::IcebergTable`) is written once over [`Catalog`]; what differs is
//! how a table is loaded, created and how a new snapshot is committed.

use serde_json::Value;

use super::catalog::SqlCatalog;
use super::rest::RestCatalog;

/// A table's current metadata location and, when the catalog returns it (REST), the metadata.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The metadata file's URL.
    pub location: String,
    /// The metadata itself; `None`: read it from `location`.
    pub metadata: Option<Value>,
}

/// What a commit did.
#[derive(Debug, Clone)]
pub enum Commit {
    /// The table holds the new snapshot; it is now this.
    Committed(Loaded),
    /// Another writer changed the table first (it is now this; `None`: the table is gone).
    Lost(Option<Loaded>),
}

/// The catalog of one table.
#[derive(Debug)]
pub enum Catalog {
    /// The SQL catalog: Arcane writes the metadata file and swaps the catalog row.
    Sql(Box<SqlCatalog>),
    /// A REST catalog: Arcane sends requirements and updates; the catalog writes the metadata.
    Rest(Box<RestCatalog>),
}

impl Catalog {
    /// The table's name (with the catalog), for messages.
    pub fn identifier(&self) -> String {
        match self {
            Self::Sql(c) => c.identifier(),
            Self::Rest(c) => c.identifier(),
        }
    }

    /// Connect (SQL: create the catalog tables when missing; REST: authenticate and read the
    /// configuration).
    pub async fn init(&mut self) -> arcane_core::Result<()> {
        match self {
            Self::Sql(c) => c.init().await,
            Self::Rest(c) => c.init().await,
        }
    }

    /// The table's current metadata; `None` when the catalog has no such table.
    pub async fn load(&mut self) -> arcane_core::Result<Option<Loaded>> {
        match self {
            Self::Sql(c) => Ok(c.load().await?.map(|location| Loaded {
                location,
                metadata: None,
            })),
            Self::Rest(c) => c.load().await,
        }
    }
}

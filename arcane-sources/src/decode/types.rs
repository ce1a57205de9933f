//! [`FieldConfig`]: the columns of an explicit schema in a spec (defined in
//! [`arcane_core::schema`], shared with the sink).

pub use arcane_core::schema::{FieldConfig, parse_type, schema_from_fields};

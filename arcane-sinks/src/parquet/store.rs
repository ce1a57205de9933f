//! The sink's store locations: [`arcane_store`], shared with the sources.

pub(crate) use arcane_store::{Location, open_location, open_location_retrying, store_error};

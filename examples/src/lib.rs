//! Runnable examples of Arcane streams (`cargo run -p arcane-examples --example NAME`):
//!
//! | example | shows |
//! |---|---|
//! | `custom_builder` | a custom stream kind: typed spec, `StreamGraphBuilder`, `arcane_runner::run` |
//! | `backfill` | an `overwrite` backfill: new generation, interrupted and resumed by id, atomic switch |
//!
//! The README's example is compiled here as a doc test, so it cannot drift from the API:
#![doc = include_str!("../../README.md")]

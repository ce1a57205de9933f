//! The Arcane runner.

//! Benchmarks of Arcane.

//! Reusable sources for Arcane streams.

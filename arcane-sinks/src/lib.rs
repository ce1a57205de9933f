//! Sinks for Arcane streams.

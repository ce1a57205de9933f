//! Runnable examples of Arcane streams; see the `examples/` directory.

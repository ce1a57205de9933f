//! Inputs a source leaves out on purpose because its settings say so (a late file under
//! `lateFiles: skip`): they are not read, so they are neither rows nor dead letters, and a run
//! must not end in a plain success without saying so. Sources [`record`] them; the runner
//! [`take`]s them at the end of a run into its summary (`inputsSkipped`, `skippedReasons`) and
//! its closing message.

use std::sync::Mutex;

/// The reasons kept (the count goes on).
pub const MAX_REASONS: usize = 5;

/// What was skipped in this process since the last [`take`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// How many inputs were skipped.
    pub count: u64,
    /// The first [`MAX_REASONS`] reasons (what was skipped, why, and what to do).
    pub reasons: Vec<String>,
}

static SKIPPED: Mutex<Skipped> = Mutex::new(Skipped {
    count: 0,
    reasons: Vec::new(),
});

/// Note one input left out on purpose, with what it was, why, and how to get it read.
pub fn record(reason: impl Into<String>) {
    let mut s = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    s.count += 1;
    if s.reasons.len() < MAX_REASONS {
        s.reasons.push(reason.into());
    }
}

/// What was skipped since the last call, and start over.
pub fn take() -> Skipped {
    std::mem::take(&mut *SKIPPED.lock().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_goes_on_past_the_reasons_kept_and_take_starts_over() {
        let _ = take();
        for i in 0..7 {
            record(format!("file {i}"));
        }
        let s = take();
        assert_eq!(s.count, 7);
        assert_eq!(s.reasons.len(), MAX_REASONS);
        assert_eq!(s.reasons[0], "file 0");
        assert_eq!(take(), Skipped::default());
    }
}

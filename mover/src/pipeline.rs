//! Shared machinery of the backup and restore pipelines.
//!
//! # Shutdown
//!
//! Every stage is a scoped thread looping over a bounded channel. The first stage to fail
//! stores its error in [`FirstError`] and raises the quit flag; the others see the flag or a
//! closed channel and return. Dropping a sender ends the stage below it. The coordinator joins
//! everything (the scope does) and returns the first error, so a failed run commits nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::{sys, Error, Result};

/// The first error of a run, and the quit flag every stage polls.
#[derive(Default)]
pub(crate) struct FirstError {
    quit: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl FirstError {
    /// Records `e` if it is the first error, and asks every stage to stop.
    pub fn set(&self, e: Error) {
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.quit.store(true, Ordering::SeqCst);
    }

    /// True once a stage failed or the user interrupted; records the interrupt.
    pub fn should_stop(&self) -> bool {
        if self.quit.load(Ordering::Relaxed) {
            return true;
        }
        if sys::interrupted() {
            self.set(Error::Interrupted);
            return true;
        }
        false
    }

    /// Runs `f`, recording its error.
    pub fn run(&self, f: impl FnOnce() -> Result<()>) {
        if let Err(e) = f() {
            self.set(e);
        }
    }

    /// The first error, if any.
    pub fn into_result(self) -> Result<()> {
        match self.error.into_inner().expect("error lock") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// How many worker threads to run by default: one per core, at least two.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// Chunks that fit in what is left of `memory` after fixed costs, two chunk buffers each (a
/// stored frame and a plaintext); at least 2.
pub(crate) fn memory_slots(memory: u64, fixed: u64, chunk: u64) -> usize {
    let left = memory.saturating_sub(fixed);
    (left / (2 * chunk.max(1))).max(2) as usize
}

/// Channel capacity in chunks: [`memory_slots`], at most 64.
pub(crate) fn channel_capacity(memory: u64, fixed: u64, chunk: u64) -> usize {
    memory_slots(memory, fixed, chunk).min(64)
}

//! Cancellation, progress counting and the worker pool shared by all long-running work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Passed to every long-running function: it checks `cancelled` between chunks and
/// reports the bytes it has processed through `advance`.
#[derive(Debug, Default)]
pub struct Control {
    cancelled: AtomicBool,
    done: AtomicU64,
}

impl Control {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// `Err(Cancelled)` once `cancel` has been called.
    pub fn check(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// The worker pool, created on first use in each process.
///
/// A forked child inherits the parent's pool object but none of its threads, so work sent to it
/// would wait forever (torch DataLoader workers fork). The pool is therefore keyed by process id,
/// and a child builds its own. The parent's pool is leaked in the child: dropping it would try
/// to talk to threads that do not exist there.
pub fn pool() -> Result<Arc<rayon::ThreadPool>> {
    let pid = std::process::id();
    let mut slot = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, pool)) = slot.as_ref() {
        if *owner == pid {
            return Ok(Arc::clone(pool));
        }
    }
    if let Some(stale) = slot.take() {
        std::mem::forget(stale);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("modelcas-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start worker threads: {e}")))?;
    let pool = Arc::new(pool);
    *slot = Some((pid, Arc::clone(&pool)));
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_sticky_and_progress_adds_up() {
        let c = Control::default();
        assert!(c.check().is_ok());
        c.advance(3);
        c.advance(4);
        assert_eq!(c.done(), 7);
        c.cancel();
        assert!(matches!(c.check(), Err(Error::Cancelled)));
    }

    #[test]
    fn pool_is_reused_within_a_process() {
        assert!(Arc::ptr_eq(&pool().unwrap(), &pool().unwrap()));
    }
}

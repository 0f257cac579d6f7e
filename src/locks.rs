//! Locks that survive a panic elsewhere.
//!
//! A `std::sync` lock is poisoned when a thread panics while holding it. The data behind our
//! locks (a cached snapshot, a lease table, a timestamp) is still whole after such a panic,
//! so the lock is taken anyway, and the poisoning is logged instead of silently skipping the
//! work (`if let Ok(..) = m.lock()` would). `what` names the lock in the log.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, recovering (and logging) a poisoned lock.
pub fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    m.lock().unwrap_or_else(|poisoned| {
        tracing::error!(
            lock = what,
            "a task panicked while holding this lock; its data is used as left"
        );
        m.clear_poison();
        poisoned.into_inner()
    })
}

/// Reads `l`, recovering (and logging) a poisoned lock.
pub fn read<'a, T>(l: &'a RwLock<T>, what: &str) -> RwLockReadGuard<'a, T> {
    l.read().unwrap_or_else(|poisoned| {
        tracing::error!(
            lock = what,
            "a task panicked while holding this lock; its data is used as left"
        );
        l.clear_poison();
        poisoned.into_inner()
    })
}

/// Writes `l`, recovering (and logging) a poisoned lock.
pub fn write<'a, T>(l: &'a RwLock<T>, what: &str) -> RwLockWriteGuard<'a, T> {
    l.write().unwrap_or_else(|poisoned| {
        tracing::error!(
            lock = what,
            "a task panicked while holding this lock; its data is used as left"
        );
        l.clear_poison();
        poisoned.into_inner()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m, "test") += 1;
        assert_eq!(*lock(&m, "test"), 2);
        assert!(!m.is_poisoned(), "the poison is cleared once logged");
    }
}

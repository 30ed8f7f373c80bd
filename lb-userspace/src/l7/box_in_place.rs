//! Boxing a large future without building it on the stack first.
//!
//! `Box::pin(f())` evaluates `f()` into a stack temporary and then copies
//! the whole future into the heap: a future's type is as large as its
//! largest state, so a request's future (~4 KiB) was copied once per
//! request only to be boxed (memcpy was a tenth of the proxy's
//! instructions). Allocating first and building the future into the
//! allocation lets the optimiser write its fields in place.
use std::{future::Future, mem::MaybeUninit, pin::Pin};

/// The future `make` builds, in a pinned box, built where it will live.
#[inline(always)]
pub fn box_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: the line above initialised the allocation.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// One heap slot for a connection's successive request futures: built in
/// place like [`box_in_place`], but into the same allocation for every
/// request. A new box per request was a large allocation freed after each
/// response, which the allocator serves from its slow path every time
/// (~300 instructions per request in the profile, `docs/bench/l7.md`).
pub struct FutureSlot<F> {
    mem: Option<Box<MaybeUninit<F>>>,
    /// Whether `mem` holds a future not dropped yet.
    live: bool,
}

impl<F> FutureSlot<F> {
    /// An empty slot (nothing allocated until the first [`Self::put`]).
    pub const fn new() -> Self {
        FutureSlot {
            mem: None,
            live: false,
        }
    }

    /// Drops the future in the slot, if any, where it lies; the slot keeps
    /// its memory.
    pub fn clear(&mut self) {
        if std::mem::take(&mut self.live) {
            if let Some(mem) = &mut self.mem {
                // SAFETY: `live` says the slot holds an initialised future,
                // and it was cleared above, so the future is dropped once.
                unsafe { mem.assume_init_drop() };
            }
        }
    }
}

impl<F: Future> FutureSlot<F> {
    /// Builds `make`'s future in the slot (after dropping the one before)
    /// and lends it pinned.
    #[inline(always)]
    pub fn put(&mut self, make: impl FnOnce() -> F) -> Pin<&mut F> {
        self.clear();
        let mem = self.mem.get_or_insert_with(Box::new_uninit);
        let fut = mem.write(make());
        self.live = true;
        // SAFETY: the future stays at this heap address until `clear` (or
        // the slot's drop) drops it in place: the memory is neither freed
        // nor written while `live` is set, and moving the slot moves only
        // the pointer.
        unsafe { Pin::new_unchecked(fut) }
    }
}

impl<F> Drop for FutureSlot<F> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boxed_future_runs_to_its_value() {
        let big = [7u8; 4096];
        let fut =
            box_in_place(move || async move { big.iter().map(|b| u32::from(*b)).sum::<u32>() });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(fut), 7 * 4096);
    }

    #[test]
    fn a_slot_runs_each_future_in_one_allocation_and_drops_each_once() {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // One future type for every request, as a connection's handler.
        fn doubled(guard: Counted, i: u32) -> impl Future<Output = u32> {
            async move {
                let _g = guard;
                i * 2
            }
        }
        let mut slot = FutureSlot::new();
        let mut at = None;
        for i in 0..3u32 {
            let guard = Counted(drops.clone());
            let fut = slot.put(|| doubled(guard, i));
            let here = &*fut as *const _ as usize;
            assert_eq!(*at.get_or_insert(here), here, "same allocation");
            assert_eq!(rt.block_on(fut), i * 2);
        }
        // A future put and never polled is dropped with the slot.
        let guard = Counted(drops.clone());
        let _ = slot.put(|| doubled(guard, 0));
        drop(slot);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 4);
    }
}

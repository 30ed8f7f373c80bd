//! Boxing a large future without building it on the stack first.
//!
//! `Box::pin(f())` evaluates `f()` into a stack temporary and then copies
//! the whole future into the heap: a future's type is as large as its
//! largest state, so a request's future (~4 KiB) was copied once per
//! request only to be boxed (memcpy was a tenth of the proxy's
//! instructions). Allocating first and building the future into the
//! allocation lets the optimiser write its fields in place.
use std::{future::Future, pin::Pin};

/// The future `make` builds, in a pinned box, built where it will live.
#[inline(always)]
pub fn box_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: the line above initialised the allocation.
    Box::into_pin(unsafe { slot.assume_init() })
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
}

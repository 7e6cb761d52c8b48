//! Progress of long passes, for a caller that shows a bar (the browser
//! worker, the CLI). The passes report `(done, total)` steps through a hook
//! installed for the duration of one call on the current thread; without a
//! hook reporting costs nothing. A thread-local keeps the passes' signatures
//! (and their `Copy` options) free of callback plumbing.

use std::cell::RefCell;
use std::rc::Rc;

/// Receives `(done, total)` after each step of a pass.
pub type Hook = Rc<dyn Fn(usize, usize)>;

thread_local! {
    static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Runs `body` with `hook` receiving the progress of every pass it starts,
/// then restores whatever hook was there before.
pub fn scoped<R>(hook: Hook, body: impl FnOnce() -> R) -> R {
    let previous = HOOK.with(|h| h.borrow_mut().replace(hook));
    let out = body();
    HOOK.with(|h| *h.borrow_mut() = previous);
    out
}

/// Reports `done` of `total` steps to the current hook, if any.
pub fn report(done: usize, total: usize) {
    let hook = HOOK.with(|h| h.borrow().clone());
    if let Some(hook) = hook {
        hook(done, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn scoped_hook_sees_reports_and_is_removed_after() {
        let seen = Rc::new(Cell::new((0, 0)));
        let s = seen.clone();
        scoped(Rc::new(move |d, t| s.set((d, t))), || report(3, 7));
        assert_eq!(seen.get(), (3, 7));
        report(9, 9);
        assert_eq!(seen.get(), (3, 7));
    }
}

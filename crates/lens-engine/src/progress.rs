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

/// Installs `hook` until the returned guard drops (for async callers,
/// whose body cannot be one closure).
pub fn install(hook: Hook) -> Installed {
    Installed {
        previous: HOOK.with(|h| h.borrow_mut().replace(hook)),
    }
}

/// Restores the previous hook when dropped.
pub struct Installed {
    previous: Option<Hook>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        HOOK.with(|h| *h.borrow_mut() = previous);
    }
}

/// Runs `body` as step `step` of `steps` of the current pass: the passes
/// inside report their own progress, seen by the current hook as a fraction
/// of that one step (for loops of passes: layer taps, Lanczos blocks).
pub fn nested<R>(step: usize, steps: usize, body: impl FnOnce() -> R) -> R {
    let _step = nest(step, steps);
    body()
}

/// [`nested`] for async callers: step `step` of `steps` until the guard
/// drops (`None` when no hook is installed).
pub fn nest(step: usize, steps: usize) -> Option<Installed> {
    const SCALE: usize = 1000;
    let outer = HOOK.with(|h| h.borrow().clone())?;
    let total = steps.max(1) * SCALE;
    outer(step * SCALE, total);
    let inner: Hook = Rc::new(move |done, of| {
        outer(step * SCALE + done * SCALE / of.max(1), total);
    });
    Some(install(inner))
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

    #[test]
    fn nested_steps_map_into_the_outer_pass() {
        let seen = Rc::new(Cell::new((0, 0)));
        let s = seen.clone();
        scoped(Rc::new(move |d, t| s.set((d, t))), || {
            nested(2, 4, || report(1, 2));
        });
        // Step 2 of 4, half done: 2.5 of 4.
        assert_eq!(seen.get(), (2500, 4000));
    }
}

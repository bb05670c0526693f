use std::fmt;
use std::marker::PhantomData;

use crate::signature::Signature;

use super::build::Link;

/// A signature missing its last argument, which the previous step supplies: built by
/// `task::partial(..)`. `L` is the type of the missing argument, `T` the task's result.
pub struct Partial<L, T> {
    pub(crate) sig: Signature<T>,
    _last: PhantomData<fn(L)>,
}

impl<L, T> Clone for Partial<L, T> {
    fn clone(&self) -> Self {
        Partial {
            sig: self.sig.clone(),
            _last: PhantomData,
        }
    }
}

impl<L, T> fmt::Debug for Partial<L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Partial").field(&self.sig).finish()
    }
}

impl<L, T> Partial<L, T> {
    /// Wraps a signature whose arguments lack the last one.
    pub fn new(sig: Signature<T>) -> Self {
        Partial {
            sig,
            _last: PhantomData,
        }
    }

    /// Sets options on the underlying signature (`.retries(3)`, `.queue(..)`, …).
    pub fn map(self, f: impl FnOnce(Signature<T>) -> Signature<T>) -> Self {
        Partial::new(f(self.sig))
    }

    /// The underlying signature.
    pub fn signature(&self) -> &Signature<T> {
        &self.sig
    }
}

/// An error callback: a signature missing its **first** argument (of type `F`), which
/// receives the error text, built by `task::errback(..)` and attached with
/// [`Signature::on_error`] (which requires `F = String`).
pub struct ErrorCallback<F, T> {
    pub(crate) sig: Signature<T>,
    _first: PhantomData<fn(F)>,
}

impl<F, T> ErrorCallback<F, T> {
    /// Wraps a signature whose arguments lack the first one.
    pub fn new(sig: Signature<T>) -> Self {
        ErrorCallback {
            sig,
            _first: PhantomData,
        }
    }
}

impl<F, T> Clone for ErrorCallback<F, T> {
    fn clone(&self) -> Self {
        ErrorCallback::new(self.sig.clone())
    }
}

impl<F, T> fmt::Debug for ErrorCallback<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ErrorCallback").field(&self.sig).finish()
    }
}

/// Something that can follow a step whose result is `In`.
///
/// Implemented by [`Partial<In, T>`] (receives the result as its last argument), by
/// [`Signature<T>`] (ignores it: the step is made immutable) and by chords as steps.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot take the previous step's output `{In}`",
    label = "the last parameter of this step must have type `{In}`",
    note = "a chain step receives the previous step's result as its last argument; use a task whose last parameter is `{In}`, or a full signature (`task::s(..)`/`task::si(..)`) that ignores it"
)]
pub trait Step<In> {
    /// The step's result.
    type Output;
    #[doc(hidden)]
    fn into_links(self) -> Vec<Link>;
}

impl<In, T> Step<In> for Partial<In, T> {
    type Output = T;
    fn into_links(self) -> Vec<Link> {
        vec![Link::task(self.sig)]
    }
}

impl<In, T> Step<In> for Signature<T> {
    type Output = T;
    fn into_links(self) -> Vec<Link> {
        vec![Link::task(self.immutable())]
    }
}

/// A complete workflow that can be sent or be a group member: a signature, a chain or a
/// chord.
pub trait Flow {
    /// The result of its last step.
    type Output;
    #[doc(hidden)]
    fn into_links(self) -> Vec<Link>;
}

impl<T> Flow for Signature<T> {
    type Output = T;
    fn into_links(self) -> Vec<Link> {
        vec![Link::task(self)]
    }
}

impl<T> Signature<T> {
    /// Runs `next` after this task succeeds, giving it this task's result (unless
    /// `next` is a full signature, which ignores it).
    pub fn then<S: Step<T>>(self, next: S) -> super::Chain<S::Output> {
        super::Chain::from(self).then(next)
    }

    /// Sends `callback` when this task succeeds, with the result appended to its
    /// arguments (unless `callback` is a full signature, which ignores it). Its result
    /// is not tracked by this task's handle; keep `callback`'s UUID to follow it.
    ///
    /// Callbacks of callbacks nest the message; sending fails with
    /// [`Error::Encode`](crate::Error::Encode) past [`MAX_NESTING`](crate::MAX_NESTING)
    /// levels (about 15 callbacks deep). Chain steps with [`then`](Self::then) instead:
    /// chains do not nest.
    pub fn on_success<S: Step<T>>(mut self, callback: S) -> Self {
        for link in callback.into_links() {
            match link {
                Link::Task(raw) => self.raw_mut().on_success.push(*raw),
                Link::Broken(e) => self.set_encode_error(e),
                Link::Chord(_) => self.set_encode_error(
                    "a chord cannot be a success callback; chain it with `.then(..)`".into(),
                ),
            }
        }
        self
    }

    /// Sends `callback` when this task fails for good, with the error text as its first
    /// argument.
    pub fn on_error<U>(mut self, callback: ErrorCallback<String, U>) -> Self {
        match callback.sig.into_raw() {
            Ok(raw) => self.raw_mut().on_error.push(raw),
            Err(e) => self.set_encode_error(e.to_string()),
        }
        self
    }
}

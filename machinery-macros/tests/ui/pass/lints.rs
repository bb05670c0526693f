//! The expansion is warning-free under strict lints, including in a library's public API.
#![deny(
    warnings,
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    unused_results,
    unused_import_braces,
    trivial_casts,
    trivial_numeric_casts,
    elided_lifetimes_in_paths,
    missing_debug_implementations,
    non_ascii_idents,
    unsafe_code,
    deprecated
)]

use machinery_core::prelude::*;

/// Public tasks, as a library would export them.
pub mod tasks {
    use machinery_core::prelude::*;

    /// Adds two numbers.
    #[task(queue = "math")]
    pub async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
        Ok(a + b)
    }

    /// Runs on the blocking pool.
    #[task]
    pub fn blocking(ctx: TaskContext) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    /// No arguments.
    #[task]
    pub async fn nothing() -> Result<(), TaskError> {
        Ok(())
    }

    /// Deprecated tasks still expand without warnings of their own.
    #[deprecated = "use `add`"]
    #[task]
    pub async fn old_add(a: i64, b: i64) -> Result<i64, TaskError> {
        Ok(a + b)
    }

    /// A snake-case exception the user allowed.
    #[allow(non_snake_case)]
    #[task]
    pub async fn fetchURL(url: String) -> Result<String, TaskError> {
        Ok(url)
    }
}

#[task]
async fn private_task() -> Result<(), TaskError> {
    Ok(())
}

/// `cfg` removes the task with its module, before or after `#[task]`.
#[cfg(any())]
#[task]
async fn compiled_out(x: NotAType) -> Result<(), TaskError> {
    Ok(())
}

#[task]
#[cfg(any())]
async fn compiled_out_too(x: NotAType) -> Result<(), TaskError> {
    Ok(())
}

fn main() {
    let _ = tasks::add::s(1, 2);
    let _ = tasks::blocking::s();
    let _ = tasks::nothing::ENTRY;
    let _ = tasks::fetchURL::NAME;
    let _ = private_task::NAME;
}

//! Callbacks a worker runs around each task.

use std::sync::Arc;

use crate::context::TaskContext;
use crate::result::TaskState;

type Before = Arc<dyn Fn(&TaskContext) + Send + Sync>;
type After = Arc<dyn Fn(&TaskContext, &TaskState) + Send + Sync>;
type OnError = Arc<dyn Fn(&TaskContext, &str) + Send + Sync>;

/// The hooks of one worker.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) before: Vec<Before>,
    pub(crate) after: Vec<After>,
    pub(crate) on_error: Vec<OnError>,
}

impl Hooks {
    pub(crate) fn before(&self, ctx: &TaskContext) {
        for h in &self.before {
            h(ctx);
        }
    }

    pub(crate) fn after(&self, ctx: &TaskContext, state: &TaskState) {
        for h in &self.after {
            h(ctx, state);
        }
    }

    pub(crate) fn on_error(&self, ctx: &TaskContext, error: &str) {
        for h in &self.on_error {
            h(ctx, error);
        }
    }
}

//! The pages: each module gathers its data (`data`, also served as JSON by
//! [`api`](crate::api)) and renders it (`page`).

pub(crate) mod overview;
pub(crate) mod periodic;
pub(crate) mod queues;
pub(crate) mod registered;
pub(crate) mod task;
pub(crate) mod tasks;
pub(crate) mod workers;
pub(crate) mod workflows;

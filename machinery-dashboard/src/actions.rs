//! The actions: `POST` forms that change data, each checked for its CSRF token and
//! origin ([`CsrfForm`]), answered with a redirect back to the page they came from
//! with a one-line message (`?flash=`).

use axum::extract::{Path, State};
use axum::response::Redirect;
use machinery_core::engine::RevokeOutcome;
use machinery_core::inspect::Confirm;
use serde::Deserialize;
use uuid::Uuid;

use crate::Shared;
use crate::csrf::CsrfForm;
use crate::error::{PageError, PageResult};
use crate::layout::Ctx;

/// Where to go back to: a path of the dashboard (never another site).
#[derive(Debug, Deserialize)]
pub(crate) struct Back {
    #[serde(default)]
    back: Option<String>,
}

/// `path` if it is a path of this dashboard, else `/`: it starts with one `/`, has no
/// `..` segment, backslash, whitespace or control character (browsers drop tabs and
/// newlines from URLs, so `/\t/evil.example` would become `//evil.example`).
fn local(path: Option<&str>) -> &str {
    match path {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p
                    .chars()
                    .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
                && !p.split(['/', '?', '#']).any(|segment| {
                    // `.` may be written `%2e` or `%2E`: browsers resolve either.
                    segment.to_ascii_lowercase().replace("%2e", ".") == ".."
                }) =>
        {
            p
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::local;

    #[test]
    fn only_dashboard_paths_are_followed_back() {
        for good in [
            "/",
            "/queues",
            "/tasks?queue=a%2Fb&list=dead",
            "/tasks/0191",
        ] {
            assert_eq!(local(Some(good)), good);
        }
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\n/evil",
            "/ /evil",
            "/\\evil",
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/.%2e/x",
            "/%2E./x",
            "/%2e%2E/x",
            "https://evil.example",
            "evil",
            "",
        ] {
            assert_eq!(local(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local(None), "/");
    }
}

/// A 303 to `back` (under the mount path) saying `flash`.
fn done(ctx: &Ctx, back: Option<&str>, flash: &str) -> Redirect {
    let back = local(back);
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let mut pairs: Vec<(String, String)> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != "flash")
            .collect();
    pairs.push(("flash".to_owned(), flash.to_owned()));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    Redirect::to(&format!("{}?{query}", ctx.href(path)))
}

pub(crate) async fn pause_queue(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(queue): Path<String>,
    CsrfForm(form): CsrfForm<Back>,
) -> PageResult<Redirect> {
    let was_running = shared.inspector.pause(&queue).await?;
    let flash = if was_running {
        format!("Queue {queue} paused: workers fetch nothing from it until it is resumed.")
    } else {
        format!("Queue {queue} was already paused.")
    };
    Ok(done(&ctx, form.back.as_deref(), &flash))
}

pub(crate) async fn resume_queue(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(queue): Path<String>,
    CsrfForm(form): CsrfForm<Back>,
) -> PageResult<Redirect> {
    let was_paused = shared.inspector.resume(&queue).await?;
    let flash = if was_paused {
        format!("Queue {queue} resumed.")
    } else {
        format!("Queue {queue} was not paused.")
    };
    Ok(done(&ctx, form.back.as_deref(), &flash))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PurgeForm {
    #[serde(flatten)]
    back: Back,
    /// The queue's name typed again: the server-side confirmation.
    #[serde(default)]
    confirm: String,
    /// `ready` (ready and delayed messages, the default) or `dead` (the dead letters).
    #[serde(default)]
    what: Option<String>,
}

pub(crate) async fn purge_queue(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(queue): Path<String>,
    CsrfForm(form): CsrfForm<PurgeForm>,
) -> PageResult<Redirect> {
    if form.confirm != queue {
        return Err(PageError::bad_request(format!(
            "not purged: type the queue's name ({queue}) to confirm"
        )));
    }
    let flash = match form.what.as_deref() {
        None | Some("ready") => {
            let n = shared.inspector.purge(&queue, Confirm::Yes).await?;
            format!("Purged {n} ready and delayed tasks of queue {queue}.")
        }
        Some("dead") => {
            let n = shared
                .inspector
                .purge_dead_letters(&queue, Confirm::Yes)
                .await?;
            format!("Purged {n} dead letters of queue {queue}.")
        }
        Some(other) => {
            return Err(PageError::bad_request(format!(
                "cannot purge `{other}`: expected ready or dead"
            )));
        }
    };
    Ok(done(&ctx, form.back.back.as_deref(), &flash))
}

/// The queue an action on one task acts in.
#[derive(Debug, Deserialize)]
pub(crate) struct TaskForm {
    #[serde(flatten)]
    back: Back,
    /// The task's queue; found from its stored state or message when left out.
    #[serde(default)]
    queue: Option<String>,
}

/// The task's queue: the form's, else where the inspector finds it.
async fn queue_of(shared: &Shared, uuid: Uuid, form: &TaskForm) -> PageResult<String> {
    if let Some(q) = form.queue.as_deref().filter(|q| !q.is_empty()) {
        return Ok(q.to_owned());
    }
    let info = shared
        .inspector
        .task(uuid)
        .await?
        .ok_or_else(|| PageError::not_found(format!("no task {uuid} is known")))?;
    Ok(info.location.map(|l| l.queue).unwrap_or(info.queue))
}

fn parse_uuid(text: &str) -> PageResult<Uuid> {
    text.parse()
        .map_err(|_| PageError::bad_request(format!("`{text}` is not a task UUID")))
}

pub(crate) async fn requeue_task(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(uuid): Path<String>,
    CsrfForm(form): CsrfForm<TaskForm>,
) -> PageResult<Redirect> {
    let uuid = parse_uuid(&uuid)?;
    let queue = queue_of(&shared, uuid, &form).await?;
    let flash = if shared.inspector.requeue_dead_letter(&queue, uuid).await? {
        format!("Task {uuid} requeued to {queue}.")
    } else {
        format!("Task {uuid} is not a dead letter of {queue}: nothing requeued.")
    };
    Ok(done(&ctx, form.back.back.as_deref(), &flash))
}

pub(crate) async fn delete_task(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(uuid): Path<String>,
    CsrfForm(form): CsrfForm<TaskForm>,
) -> PageResult<Redirect> {
    let uuid = parse_uuid(&uuid)?;
    let queue = queue_of(&shared, uuid, &form).await?;
    // A dead letter, else a ready or delayed message; a task in flight is cancelled,
    // not deleted.
    let flash = if shared.inspector.delete_dead_letter(&queue, uuid).await? {
        format!("Dead letter {uuid} deleted from {queue}.")
    } else if shared.inspector.delete_pending(&queue, uuid).await? {
        format!("Pending task {uuid} deleted from {queue}.")
    } else {
        format!(
            "Task {uuid} is neither pending nor a dead letter of {queue}: nothing deleted \
             (cancel a running task instead)."
        )
    };
    Ok(done(&ctx, form.back.back.as_deref(), &flash))
}

pub(crate) async fn cancel_task(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(uuid): Path<String>,
    CsrfForm(form): CsrfForm<TaskForm>,
) -> PageResult<Redirect> {
    let uuid = parse_uuid(&uuid)?;
    let server = shared.inspector.server();
    let outcome = match form.queue.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => server.revoke_in(q, uuid).await?,
        None => server.revoke(uuid).await?,
    };
    let flash = match outcome {
        RevokeOutcome::Revoked => format!("Task {uuid} revoked: it will not run."),
        RevokeOutcome::Cancelling => {
            format!("Task {uuid} is running: its worker was told to cancel it.")
        }
        RevokeOutcome::Finished(state) => {
            format!("Task {uuid} had already finished ({}).", state.as_str())
        }
        RevokeOutcome::Unknown => {
            format!("No state is stored for task {uuid}; it is revoked should it arrive.")
        }
        _ => format!("Task {uuid}: revoke sent."),
    };
    Ok(done(&ctx, form.back.back.as_deref(), &flash))
}

/// The outcome of an action on periodic entry `name`.
fn periodic_flash(name: &str, found: bool, what: &str) -> String {
    if found {
        format!("Periodic entry {name} {what}.")
    } else {
        format!("No periodic entry {name}: nothing {what}.")
    }
}

pub(crate) async fn pause_periodic(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<Back>,
) -> PageResult<Redirect> {
    let found = shared.inspector.pause_periodic(&name).await?;
    Ok(done(
        &ctx,
        form.back.as_deref(),
        &periodic_flash(&name, found, "paused"),
    ))
}

pub(crate) async fn resume_periodic(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<Back>,
) -> PageResult<Redirect> {
    let found = shared.inspector.resume_periodic(&name).await?;
    Ok(done(
        &ctx,
        form.back.as_deref(),
        &periodic_flash(&name, found, "resumed"),
    ))
}

pub(crate) async fn remove_periodic(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<Back>,
) -> PageResult<Redirect> {
    let found = shared.inspector.remove_periodic(&name).await?;
    Ok(done(
        &ctx,
        form.back.as_deref(),
        &periodic_flash(&name, found, "removed"),
    ))
}

//! The command line: global options and every command, as clap parses them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use machinery_core::inspect::TaskList;
use uuid::Uuid;

/// See and act on the queues, tasks, workers, statistics and periodic entries of a
/// Machinery deployment.
///
/// Connects as the library does: the `MACHINERY_*` environment variables, over the
/// YAML file of `--config`, under `--broker`. Prints tables, or JSON with `--json`.
/// Exit status: 0 done, 1 failed (engine, configuration, unsupported), 2 wrong usage,
/// 3 not found.
#[derive(Debug, Parser)]
#[command(name = "machinery", version, max_term_width = 100)]
pub struct Cli {
    /// Broker URL (`redis://host:6379/0`, `memory://`); overrides the configuration's
    /// `broker` and, unless set on its own, the result backend.
    #[arg(long, global = true, value_name = "URL")]
    pub broker: Option<String>,
    /// YAML configuration file, as `Config::from_yaml` reads it (the environment still
    /// wins over it).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable output: JSON (JSON Lines for `tasks ls --all`); times in
    /// milliseconds since the Unix epoch, durations in milliseconds.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every queue with its ready, delayed, in-flight and dead counts, and whether it
    /// is paused.
    Queues,
    /// The workers alive: where they run, what they consume, what they run now.
    Workers,
    /// Processed, failed, retried and dead-lettered counts, rates and run/wait-time
    /// percentiles per queue and task.
    Stats(StatsArgs),
    /// Lists of tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// One task.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Dead letters: requeue, delete or purge.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// A queue: pause, resume or purge.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Periodic entries: list, pause, resume or remove.
    #[command(subcommand)]
    Periodic(PeriodicCommand),
    /// Serves cluster-wide Prometheus gauges (queue depths, in flight, workers alive),
    /// read from the broker, at `/metrics` until interrupted.
    Metrics(MetricsArgs),
    /// Serves the web dashboard (queues, tasks, workers, workflows, registered tasks,
    /// periodic entries, with actions) until interrupted.
    ///
    /// Settings come from the `dashboard:` section of the configuration and the
    /// `MACHINERY_DASHBOARD_*` variables; the flags override them. Off loopback the
    /// dashboard needs credentials (basic auth or a bearer token) and refuses to start
    /// without them. Prefer the variables for secrets: flags show in the process list.
    Dashboard(DashboardArgs),
}

/// `machinery stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How far back: `30m`, `1h`, `1d`; at least one minute and at most `stats_window`
    /// (statistics are kept by the minute, for that long).
    #[arg(long, default_value = "1h", value_parser = parse_since)]
    pub since: Duration,
    /// Only this queue.
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
}

/// `machinery tasks …`.
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// One page of the tasks of a queue in a state, and the cursor of the next page.
    Ls(LsArgs),
}

/// `machinery tasks ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The queue (default: the configuration's `default_queue`).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// pending, delayed, in_flight, dead or failed.
    #[arg(long, value_name = "STATE")]
    pub state: TaskList,
    /// Tasks per page, 1 to 10000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub limit: u16,
    /// Where to start: the `next` cursor printed with the previous page.
    #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
    pub cursor: Option<String>,
    /// Walk every page (`--limit` tasks at a time), printing each as it comes: one line
    /// (or JSON object) per task, never the whole list in memory.
    #[arg(long)]
    pub all: bool,
}

/// `machinery task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Everything known about one task: state, result or error, timings, worker,
    /// headers, arguments as JSON, and where its message is.
    Show {
        /// The task's UUID.
        uuid: Uuid,
    },
    /// Deletes a pending (ready or delayed) task from its queue, so it never runs; a
    /// task in flight is left to its worker. Its stored state is kept.
    Delete {
        /// The task's UUID.
        uuid: Uuid,
        /// The queue it waits in (default: the queue its stored state names, else the
        /// configuration's default queue).
        #[arg(long, value_name = "QUEUE")]
        queue: Option<String>,
    },
    /// Revokes a task: a pending or delayed one never runs and is REVOKED at once; a
    /// running one is cancelled by its worker (aborted after `revoke_grace`) and ends
    /// REVOKED unless it finishes first; its later workflow steps are REVOKED too. The
    /// revocation is kept for the results TTL, so a message with this UUID that comes
    /// later is skipped.
    Cancel {
        /// The task's UUID.
        uuid: Uuid,
        /// The queue it was sent to (default: looked up from its stored state).
        #[arg(long, value_name = "QUEUE")]
        queue: Option<String>,
    },
}

/// Which dead letters an action takes.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct DeadTarget {
    /// The dead letter of this task.
    #[arg(group = "target")]
    pub uuid: Option<Uuid>,
    /// Every dead letter of the queue.
    #[arg(long, group = "target")]
    pub all: bool,
}

/// `machinery dead …`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Moves dead letters back into their queue, ready at once.
    Requeue {
        /// The queue (default: the configuration's `default_queue`).
        #[arg(long, value_name = "QUEUE")]
        queue: Option<String>,
        #[command(flatten)]
        target: DeadTarget,
    },
    /// Deletes dead letters (`--all` needs `--yes`).
    Delete {
        /// The queue (default: the configuration's `default_queue`).
        #[arg(long, value_name = "QUEUE")]
        queue: Option<String>,
        #[command(flatten)]
        target: DeadTarget,
        /// Confirms deleting every dead letter.
        #[arg(long)]
        yes: bool,
    },
    /// Deletes every dead letter of a queue (needs `--yes`).
    Purge {
        /// The queue (default: the configuration's `default_queue`).
        #[arg(long, value_name = "QUEUE")]
        queue: Option<String>,
        /// Confirms the purge.
        #[arg(long)]
        yes: bool,
    },
}

/// `machinery queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Workers stop fetching from the queue (publishing still works) until it is
    /// resumed; the pause is kept by the broker.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Workers fetch from the queue again.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Deletes every ready and delayed task of the queue (not those in flight, not the
    /// dead letters). Needs `--yes`.
    Purge {
        /// The queue.
        queue: String,
        /// Confirms the purge.
        #[arg(long)]
        yes: bool,
    },
}

/// `machinery periodic …`.
#[derive(Debug, Subcommand)]
pub enum PeriodicCommand {
    /// Every periodic entry: schedule, pause flag, next and last run.
    Ls,
    /// Pauses an entry for every scheduler.
    Pause {
        /// The entry's name.
        name: String,
    },
    /// Resumes an entry from its next tick (ticks missed meanwhile are not caught up).
    Resume {
        /// The entry's name.
        name: String,
    },
    /// Removes an entry for every scheduler (a scheduler started later with it in its
    /// code registers it again).
    Remove {
        /// The entry's name.
        name: String,
    },
}

/// `machinery metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address to listen on, `HOST:PORT`: `127.0.0.1:9464`, `[::1]:9464`,
    /// `localhost:9464` (a host name is resolved; the first address that binds is
    /// used).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
}

/// `machinery dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to listen on, `HOST:PORT` (default: `dashboard.listen`,
    /// `MACHINERY_DASHBOARD_LISTEN`, else `127.0.0.1:8080`); a host name is resolved.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// HTTP basic auth user name (with `--password`); overrides `dashboard.username`.
    #[arg(long, value_name = "USER", requires = "password")]
    pub username: Option<String>,
    /// HTTP basic auth password (with `--username`); overrides `dashboard.password`.
    #[arg(long, value_name = "PASSWORD", requires = "username")]
    pub password: Option<String>,
    /// Bearer token (`Authorization: Bearer …`, at least 16 characters); overrides
    /// `dashboard.token`.
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["username", "password"])]
    pub token: Option<String>,
}

fn parse_since(text: &str) -> Result<Duration, String> {
    let since = machinery_core::config::parse_duration(text)?;
    if since.is_zero() {
        return Err("the window must be longer than 0".to_owned());
    }
    Ok(since)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn since_takes_the_configuration_syntax() {
        assert_eq!(parse_since("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_since("90"), Ok(Duration::from_secs(90)));
        assert!(parse_since("0s").unwrap_err().contains("longer than 0"));
        assert!(parse_since("soon").is_err());
    }
}

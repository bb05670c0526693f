//! The commands, each in its file; [`run`] connects and dispatches.

mod dashboard;
mod dead;
mod metrics;
mod periodic;
mod queue;
mod queues;
mod stats;
mod task;
mod tasks;
mod workers;

use machinery_core::{Config, Server};

use crate::args::{Cli, Command, DeadCommand, DeadTarget, QueueCommand, TaskCommand, TasksCommand};
use crate::error::{Failure, Result};
use crate::output::Out;

/// The configuration as the library reads it (`--config` file, then `MACHINERY_*`),
/// with `--broker` over both.
fn config(cli: &Cli) -> Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_yaml(path)?,
        None => Config::from_env()?,
    };
    if let Some(url) = &cli.broker {
        config.broker.clone_from(url);
        config.validate().map_err(|e| match e {
            // The key named is the configuration's; the value came from the flag.
            machinery_core::Error::Config { key, reason } if key == "broker" => {
                Failure::usage(format!("invalid --broker: {reason}"))
            }
            e => Failure::from(e),
        })?;
    }
    Ok(config)
}

/// Refuses, before connecting, a destructive bulk action without `--yes`.
fn confirmed(command: &Command) -> Result {
    let refuse = |what: &str| Err(Failure::usage(format!("{what}: add --yes to confirm")));
    match command {
        Command::Queue(QueueCommand::Purge { queue, yes: false }) => refuse(&format!(
            "`queue purge` deletes every ready and delayed task of queue {queue}"
        )),
        Command::Dead(DeadCommand::Purge { yes: false, .. }) => {
            refuse("`dead purge` deletes every dead letter of the queue")
        }
        Command::Dead(DeadCommand::Delete {
            target: DeadTarget { all: true, .. },
            yes: false,
            ..
        }) => refuse("`dead delete --all` deletes every dead letter of the queue"),
        _ => Ok(()),
    }
}

/// Runs the command of `cli`, printing to `out`.
pub async fn run(cli: Cli, out: &mut Out) -> Result {
    confirmed(&cli.command)?;
    let mut config = config(&cli)?;
    // The dashboard's settings and address are checked before anything connects.
    let dashboard = match &cli.command {
        Command::Dashboard(args) => Some(dashboard::prepare(&mut config, args).await?),
        _ => None,
    };
    if config.broker.starts_with("memory:") {
        eprintln!(
            "note: the broker is memory://, this process's own: it holds nothing that another \
             process sent (set --broker, MACHINERY_BROKER or --config)"
        );
    }
    let server = Server::from_config(config).await?;
    match cli.command {
        Command::Queues => queues::run(&server, out).await,
        Command::Workers => workers::run(&server, out).await,
        Command::Stats(args) => stats::run(&server, args, out).await,
        Command::Tasks(TasksCommand::Ls(args)) => tasks::run(&server, args, out).await,
        Command::Task(TaskCommand::Show { uuid }) => task::run(&server, uuid, out).await,
        Command::Task(TaskCommand::Delete { uuid, queue }) => {
            task::delete(&server, uuid, queue, out).await
        }
        Command::Task(TaskCommand::Cancel { uuid, queue }) => {
            task::cancel(&server, uuid, queue, out).await
        }
        Command::Dead(cmd) => dead::run(&server, cmd, out).await,
        Command::Queue(cmd) => queue::run(&server, cmd, out).await,
        Command::Periodic(cmd) => periodic::run(&server, cmd, out).await,
        Command::Metrics(args) => metrics::run(&server, args, out).await,
        Command::Dashboard(_) => match dashboard {
            Some(prepared) => dashboard::run(&server, prepared, out).await,
            None => Err(Failure::failed("the dashboard settings were not prepared")),
        },
    }
}

/// The queue named, or the configuration's default queue.
fn queue_or_default(server: &Server, queue: Option<String>) -> String {
    queue.unwrap_or_else(|| server.config().default_queue.clone())
}

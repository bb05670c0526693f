//! `machinery`: see and act on the queues, tasks, workers, statistics and periodic
//! entries of a Machinery deployment, on Redis or memory URLs.
//!
//! ```text
//! machinery queues
//! machinery workers
//! machinery stats [--since 1h] [--queue Q]
//! machinery tasks ls --queue Q --state S [--limit N] [--cursor C | --all]
//! machinery task show UUID
//! machinery dead requeue|delete --queue Q (UUID | --all) ; dead purge --queue Q --yes
//! machinery queue pause|resume Q ; queue purge Q --yes
//! machinery periodic ls | periodic pause|resume|remove NAME
//! machinery metrics --listen ADDR
//! machinery dashboard [--listen ADDR] [--username U --password P | --token T]
//! ```
//!
//! Global options: `--broker URL`, `--config FILE`, `--json`; the `MACHINERY_*`
//! environment variables are read as the library reads them. Exit status: 0 done,
//! 1 failed, 2 wrong usage, 3 not found.

// Registers the `redis://` engine and periodic store.
use machinery_redis as _;

mod args;
mod commands;
mod error;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;
use crate::error::Failure;
use crate::output::Out;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::failed(format!("cannot start the runtime: {e}")).report(),
    };
    let mut out = Out::new(cli.json);
    let done = runtime.block_on(commands::run(cli, &mut out));
    match done.and_then(|()| out.flush().map_err(Failure::from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // What was printed before the failure still goes out.
            let _ = out.flush();
            failure.report()
        }
    }
}

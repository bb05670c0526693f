//! What goes wrong, as a sentence on stderr and an exit status.

use std::fmt;
use std::io;
use std::process::ExitCode;

/// A failed command: its message and exit status.
pub struct Failure {
    status: u8,
    message: String,
}

/// 1: the engine, the configuration or the connection failed, or the engine lacks the
/// operation.
pub const FAILED: u8 = 1;
/// 2: the command line is wrong (clap uses it for its own errors too).
pub const USAGE: u8 = 2;
/// 3: the task, dead letter or periodic entry named does not exist.
pub const NOT_FOUND: u8 = 3;

impl Failure {
    /// Wrong usage that clap cannot see (a missing `--yes`).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            status: USAGE,
            message: message.into(),
        }
    }

    /// The thing named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Failure {
            status: NOT_FOUND,
            message: message.into(),
        }
    }

    /// Anything else.
    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            status: FAILED,
            message: message.into(),
        }
    }

    /// Prints the message (when there is one) and gives the exit status.
    pub fn report(self) -> ExitCode {
        if !self.message.is_empty() {
            eprintln!("error: {}", self.message);
        }
        ExitCode::from(self.status)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (exit status {})", self.message, self.status)
    }
}

impl From<machinery_core::Error> for Failure {
    fn from(e: machinery_core::Error) -> Self {
        use machinery_core::Error;
        let hint = match &e {
            Error::InvalidCursor { .. } => return Failure::usage(e.to_string()),
            Error::Unsupported { .. } => {
                "\nhint: this command needs an engine with that part of the admin plane (redis:// and memory:// have it)"
            }
            _ if matches!(
                e.kind(),
                machinery_core::ErrorKind::Connection | machinery_core::ErrorKind::Timeout
            ) =>
            {
                "\nhint: check --broker, MACHINERY_BROKER or the `broker` key of --config, and that the server is up"
            }
            _ => "",
        };
        // `Debug` is the sentence of `Display` followed by the causes it does not
        // already contain.
        Failure::failed(format!("{e:?}{hint}"))
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away (`| head`): stop quietly, as the reader asked.
            Failure {
                status: 0,
                message: String::new(),
            }
        } else {
            Failure::failed(format!("cannot write the output: {e}"))
        }
    }
}

/// What a command returns.
pub type Result<T = (), E = Failure> = std::result::Result<T, E>;

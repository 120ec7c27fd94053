//! The `flowlogd` binary: parses the command line, sets up logging and hands over to [`flowlogd::cli`].
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = flowlogd::cli::Cli::parse();
    flowlogd::cli::run(cli)
}

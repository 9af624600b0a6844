//! `ganglion-rrd`: the `ganglion rrd …` commands as a binary of their own, so this
//! crate's tests (and operators without a collector) can run them.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "ganglion-rrd", version, about = "rrdtool-compatible commands on ganglion round-robin files.")]
struct Args {
    #[command(subcommand)]
    cmd: ganglion_store::cli::RrdCommand,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match ganglion_store::cli::run(args.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

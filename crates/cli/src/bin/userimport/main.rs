//! `userimport`: the admin CLI. The command line is in `args.rs`, what each command does in
//! `run.rs`; the commands themselves are the `cli` library's.

mod args;
mod run;

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run::run(args::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `userimport … -o json | head`: the reader has what it wanted.
        Err(error) if broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn broken_pipe(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            // serde_json keeps the I/O error inside, without a source.
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|json| json.io_error_kind() == Some(BrokenPipe))
    })
}

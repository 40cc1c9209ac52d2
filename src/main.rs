//! The `weatherflow` binary: logging set-up and the CLI; everything else lives in the library.

fn main() -> std::process::ExitCode {
    weatherflow::logging::init();
    match weatherflow::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! The `weatherflow` binary: logging set-up and the CLI; everything else lives in the library.

/// Records are allocated on the worker that reads them and freed on the worker that writes them;
/// glibc's malloc spent about 9 % of the end-to-end CPU time on that (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

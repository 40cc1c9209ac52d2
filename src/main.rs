//! The `weatherflow` binary: the allocator, logging set-up and the CLI; everything else lives in
//! the library.

/// jemalloc for every allocation of the process (see Cargo.toml and BENCHMARKS.md for why).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

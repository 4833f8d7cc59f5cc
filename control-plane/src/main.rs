//! `bagui-cp`: the control plane's command line (see `cli`).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: at province scale glibc spent a quarter of the control
/// plane's CPU in its own bookkeeping (a heap fragmented by sled's and quinn's many short-lived
/// buffers); see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages: mimalloc asks for them on its arenas, and a huge page is
    // resident in full as soon as one byte of it is touched. At province scale that was 60 MiB
    // of the steady RSS and 550 MiB of the ramp's peak, for no measurable CPU gain (BENCHMARKS).
    // The flag is the process's and also covers what was mapped before this line.
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("warning: could not turn transparent huge pages off: {error}");
    }
    let cli = bagui_control_plane::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bagui_control_plane::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

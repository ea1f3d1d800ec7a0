//! The `wepoq` command: a thin shell over the compiler, reconciler and runtime crates.

mod cli;

// glibc's malloc spends a quarter of a big compile consolidating free lists (millions of
// small rows are built and dropped); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}

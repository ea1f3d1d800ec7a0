//! The `wepoq` command: a thin shell over the compiler, reconciler and runtime crates.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

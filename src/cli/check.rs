//! `wepoq check`: compile and report; exit 1 on any error.

use std::process::ExitCode;

use super::SpecArgs;
use super::load::load;

pub fn run(args: &SpecArgs) -> ExitCode {
    match load(args) {
        Ok(loaded) => {
            for ns in &loaded.compiled.namespaces {
                eprintln!(
                    "ok: {} ({} services, {} endpoints, {} NB rows)",
                    ns.owner(),
                    ns.namespace.services.len(),
                    ns.endpoints.len(),
                    ns.rows.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::FAILURE,
    }
}

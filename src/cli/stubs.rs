//! Stub containers in the live commands: wepoq's own image in their plans (named by this
//! binary's content, imported by apply), and the wait until every stub listens and has its
//! `min_warm` workers registered, read from the status file each stub keeps in its directory
//! on this host.

use std::path::Path;
use std::time::{Duration, Instant};

use wepoq_compiler::containers::ContainerUnit;
use wepoq_compiler::stub_unit::{self, SELF_IMAGE};
use wepoq_reconciler::docker::image::SelfImage;
use wepoq_reconciler::docker::{self, Docker};
use wepoq_runtime::stub::status::StatusFile;

/// How often the status files are read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Whether `image` is wepoq's own, as the compiler names it or as a plan resolved it.
pub fn is_self_image(image: &str) -> bool {
    image == SELF_IMAGE || image.starts_with(&format!("{SELF_IMAGE}:"))
}

/// Names this binary's image in every unit that runs wepoq's own image.
pub fn resolve_self_image(desired: &mut [ContainerUnit]) -> Result<Option<SelfImage>, String> {
    if !desired.iter().any(|u| u.container.image == SELF_IMAGE) {
        return Ok(None);
    }
    let image = SelfImage::of_this_binary().map_err(|e| e.to_string())?;
    for unit in desired
        .iter_mut()
        .filter(|u| u.container.image == SELF_IMAGE)
    {
        unit.container.image = image.reference.clone();
    }
    Ok(Some(image))
}

/// The image a saved plan's stubs run, which must be this binary's: another binary's image
/// cannot be made here.
pub fn saved_self_image(desired: &[ContainerUnit]) -> Result<Option<SelfImage>, String> {
    // An offline plan names no tag; it is refused as offline before any container is made.
    let Some(wanted) = desired
        .iter()
        .map(|u| u.container.image.as_str())
        .find(|i| is_self_image(i) && *i != SELF_IMAGE)
    else {
        return Ok(None);
    };
    let image = SelfImage::of_this_binary().map_err(|e| e.to_string())?;
    if image.reference != wanted {
        return Err(format!(
            "the saved plan runs stubs from {wanted}, but this wepoq binary makes {}\nhelp: plan again with this binary, or apply with the binary that made the plan",
            image.reference
        ));
    }
    Ok(Some(image))
}

/// Waits until every stub container among `desired` listens, has `min_warm` workers
/// registered and `precreate` workers pre-created (the agent makes both); on timeout, says
/// which stubs are not ready and how far each got.
pub async fn wait_ready(
    docker: &Docker,
    desired: &[ContainerUnit],
    run_dir: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let stubs: Vec<(&ContainerUnit, (u32, u32))> = desired
        .iter()
        .filter_map(|u| Some((u, stub_unit::readiness(&u.container)?)))
        .collect();
    if stubs.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let stem_cells = docker::observe::stem_cells(docker)
            .await
            .map_err(|e| e.to_string())?;
        let waiting: Vec<String> = stubs
            .iter()
            .filter_map(|(unit, (min_warm, precreate))| {
                let made = stem_cells.get(&unit.name).copied().unwrap_or(0);
                not_ready(unit, *min_warm, run_dir).or_else(|| {
                    (made < *precreate).then(|| {
                        format!("{}: {made} of {precreate} workers pre-created", unit.name)
                    })
                })
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(format!(
                "stubs not ready after {} s:\n  {}\nhelp: the host agent starts the workers: is `wepoq agent` running on this host, with the same --run-dir ({})?",
                timeout.as_secs(),
                waiting.join("\n  "),
                run_dir.display()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why the stub of `unit` does not serve yet, or `None` when it does.
fn not_ready(unit: &ContainerUnit, min_warm: u32, run_dir: &Path) -> Option<String> {
    let path = run_dir
        .join(stub_unit::stub_dir(&unit.name))
        .join(stub_unit::STATUS_FILE);
    match StatusFile::read(&path) {
        Ok(Some(s)) if s.listening && s.registered >= min_warm as usize => None,
        Ok(Some(s)) => Some(format!(
            "{}: {} of {min_warm} warm workers registered",
            unit.name, s.registered
        )),
        Ok(None) => Some(format!("{}: not listening yet", unit.name)),
        Err(e) => Some(format!("{}: {}: {e}", unit.name, path.display())),
    }
}

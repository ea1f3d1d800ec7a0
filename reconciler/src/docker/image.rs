//! wepoq's own image: the running binary, and when it is dynamically linked the loader and
//! the shared libraries it has mapped, as a FROM-scratch image tagged by content hash and
//! imported through the Docker API when the host lacks it. Stub containers run it: no
//! registry, no Dockerfile, no build step, and a new wepoq binary is a new tag.
//!
//! The libraries are the ones `/proc/self/maps` shows mapped, which is exactly what this
//! process loaded (wepoq opens no library later with dlopen); the loader comes from the ELF
//! program header's interpreter, at the path the binary asks for.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::DockerError;

/// The repository of wepoq's own image; the tag is the first 12 hex digits of its content's
/// SHA-256.
pub const SELF_IMAGE_REPO: &str = "wepoq-self";
/// Where the binary sits in the image.
pub const SELF_BINARY: &str = "/wepoq";

/// wepoq's own image as this binary would make it: its files and its reference, known
/// without asking Docker (a plan names the image; only an apply imports it).
#[derive(Debug, Clone)]
pub struct SelfImage {
    files: BTreeMap<PathBuf, PathBuf>,
    /// `wepoq-self:<content tag>`.
    pub reference: String,
}

impl SelfImage {
    /// Reads this binary and what it loaded, and names the image they make.
    pub fn of_this_binary() -> Result<SelfImage, DockerError> {
        let files = self_files()
            .map_err(|e| DockerError::Image(format!("reading wepoq's own files: {e}")))?;
        let tag = content_tag(&files)
            .map_err(|e| DockerError::Image(format!("hashing wepoq's own files: {e}")))?;
        Ok(SelfImage {
            files,
            reference: format!("{SELF_IMAGE_REPO}:{tag}"),
        })
    }

    /// Imports the image when the host does not have it.
    pub async fn ensure(&self, docker: &Docker) -> Result<(), DockerError> {
        if docker.inspect_image(&self.reference).await.is_ok() {
            return Ok(());
        }
        let archive = archive(&self.files)
            .map_err(|e| DockerError::Image(format!("packing wepoq's own image: {e}")))?;
        let tag = self.reference.rsplit(':').next().unwrap_or_default();
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(SELF_IMAGE_REPO.into()),
            tag: Some(tag.into()),
            changes: vec![format!("ENTRYPOINT [\"{SELF_BINARY}\"]")],
            ..Default::default()
        };
        let mut progress = docker.create_image(
            Some(options),
            Some(bollard::body_full(archive.into())),
            None,
        );
        while let Some(step) = progress.next().await {
            step.map_err(DockerError::api(format!("import {}", self.reference)))?;
        }
        Ok(())
    }
}

/// The reference of wepoq's own image, imported first when the host does not have it.
pub async fn ensure_self_image(docker: &Docker) -> Result<String, DockerError> {
    let image = SelfImage::of_this_binary()?;
    image.ensure(docker).await?;
    Ok(image.reference)
}

/// Path in the image -> file on this host.
fn self_files() -> io::Result<BTreeMap<PathBuf, PathBuf>> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let mut files = BTreeMap::from([(PathBuf::from(SELF_BINARY), exe.clone())]);
    for lib in mapped_libraries(&std::fs::read_to_string("/proc/self/maps")?) {
        files.insert(lib.clone(), lib);
    }
    if let Some(interp) = interpreter(&std::fs::read(&exe)?) {
        // Often a symbolic link (/lib64/ld-linux-x86-64.so.2): the image gets the file.
        let real = std::fs::canonicalize(&interp)?;
        files.insert(interp, real);
    }
    Ok(files)
}

/// The shared objects a maps listing shows mapped from files.
fn mapped_libraries(maps: &str) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && path.contains(".so"))
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

/// The PT_INTERP path of a 64-bit little-endian ELF file; `None` for a static binary.
fn interpreter(elf: &[u8]) -> Option<PathBuf> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" || elf.get(4)? != &2 || elf.get(5)? != &1 {
        return None;
    }
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = (
        u64_at(0x20)? as usize,
        u16_at(0x36)? as usize,
        u16_at(0x38)?,
    );
    for i in 0..usize::from(phnum) {
        let header = phoff + i * phentsize;
        let kind = u32::from_le_bytes(elf.get(header..header + 4)?.try_into().ok()?);
        if kind == PT_INTERP {
            let (offset, size) = (u64_at(header + 8)? as usize, u64_at(header + 32)? as usize);
            let path = elf.get(offset..offset + size)?;
            let path = path.strip_suffix(b"\0").unwrap_or(path);
            return Some(PathBuf::from(std::str::from_utf8(path).ok()?));
        }
    }
    None
}

/// The first 12 hex digits of the SHA-256 over every file's path, length and bytes.
fn content_tag(files: &BTreeMap<PathBuf, PathBuf>) -> io::Result<String> {
    let mut hasher = Sha256::new();
    for (inside, outside) in files {
        let data = std::fs::read(outside)?;
        let path = inside.strip_prefix("/").unwrap_or(inside);
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update((data.len() as u64).to_be_bytes());
        hasher.update(&data);
    }
    let digest = hasher.finalize();
    Ok(digest[..6].iter().map(|b| format!("{b:02x}")).collect())
}

/// The tar of `files`, owned by root, modes kept, times zeroed.
fn archive(files: &BTreeMap<PathBuf, PathBuf>) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (inside, outside) in files {
        let data = std::fs::read(outside)?;
        let mode = std::fs::metadata(outside)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))?;
        let path = inside.strip_prefix("/").unwrap_or(inside);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder.append_data(&mut header, path, data.as_slice())?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn this_binary_brings_its_loader_and_libraries() {
        let files = self_files().unwrap();
        assert!(files.contains_key(Path::new(SELF_BINARY)));
        let exe = std::fs::read("/proc/self/exe").unwrap();
        if let Some(interp) = interpreter(&exe) {
            assert!(
                files.contains_key(&interp),
                "the loader {interp:?}: {files:?}"
            );
            assert!(
                files
                    .keys()
                    .any(|p| p.to_string_lossy().contains("libc.so")),
                "a dynamic binary maps libc: {files:?}"
            );
        }
    }

    #[test]
    fn maps_lines_name_their_files() {
        let maps = "7f00-7f01 r-xp 00000000 fd:00 12 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f01-7f02 rw-p 00000000 00:00 0 [heap]\n\
                    7f02-7f03 r--p 00000000 fd:00 13 /usr/bin/wepoq\n\
                    7f03-7f04 r--p 00000000 fd:00 12 /usr/lib/x86_64-linux-gnu/libc.so.6\n";
        assert_eq!(
            mapped_libraries(maps),
            [PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")]
        );
        assert_eq!(interpreter(b"not an elf"), None);
    }
}

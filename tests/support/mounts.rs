//! Filesystems a test mounts (tmpfs, or an ext4 image through a loop
//! device) and what it needs for that, for the tests that need a real disk
//! to fail or a power cut to happen: root, the tools, a loop device. A
//! missing prerequisite is a skip, printed, except under `CI=true`, where
//! it fails (cargo test has no skipped state).

use crate::wait_until;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Root, `mount`/`umount`, the `tools` (each with an argument that makes it
/// print its version), and with `loop_device` a free one; else what is missing.
pub fn prerequisites(tools: &[(&str, &str)], loop_device: bool) -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("root (cannot run id -u: {e})"))?;
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    if uid != "0" {
        return Err(format!("root (running as uid {uid})"));
    }
    for (tool, arg) in [("mount", "--version"), ("umount", "--version")]
        .iter()
        .chain(tools)
    {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("{tool} (cannot run {tool} {arg})"));
        }
    }
    if loop_device {
        let found = Command::new("losetup")
            .arg("-f")
            .output()
            .map_err(|e| format!("a loop device (cannot run losetup -f: {e})"))?;
        if !found.status.success() {
            return Err(format!(
                "a loop device (losetup -f: {})",
                String::from_utf8_lossy(&found.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Report that `test` lacks `missing`: a skip, or a failure when `CI=true`.
pub fn skip(test: &str, missing: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {missing}, and CI=true forbids skipping it");
    }
    // Straight to stderr, past the test harness's capture: a skip is news.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test} needs {missing}");
}

/// A sparse image file of `bytes` holding a fresh ext4, fully initialised
/// now so that no background initialisation writes to it during the test.
pub fn make_ext4(image: &Path, bytes: u64) {
    std::fs::File::create(image)
        .and_then(|f| f.set_len(bytes))
        .expect("the sparse image file should be created in the temp dir");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(image)
        .output()
        .expect("mkfs.ext4 should run");
    assert!(
        out.status.success(),
        "mkfs.ext4 {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh ext4 in a sparse image file, in a temp dir of its own,
/// loop-mounted. Fields drop in order: unmounted before the dir goes.
pub struct Ext4Image {
    pub mount: Mount,
    pub image: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Ext4Image {
    /// An image of `bytes`, mounted; `None` (after [`skip`] says why for
    /// `test`) when it cannot be. The caller checks its own prerequisites.
    pub fn mounted(test: &str, bytes: u64) -> Option<Ext4Image> {
        let dir = tempfile::tempdir().expect("a temp dir for the disk image");
        let image = dir.path().join("disk.img");
        make_ext4(&image, bytes);
        match Mount::ext4_image(&image, &dir.path().join("mnt")) {
            Ok(mount) => Some(Ext4Image { mount, image, dir }),
            Err(e) => {
                skip(test, &format!("a loop-mounted ext4 image: {e}"));
                None
            }
        }
    }
}

/// A filesystem mounted by the test; unmounted when dropped. Whatever runs
/// on it must be stopped first: declare this guard before it.
pub struct Mount {
    dir: PathBuf,
    mounted: bool,
}

impl Mount {
    /// A tmpfs of `size` (as `mount -o size=` takes it) on `dir`.
    pub fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        Mount::new(dir, &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
    }

    /// The ext4 in `image`, through a loop device (detached on unmount).
    pub fn ext4_image(image: &Path, dir: &Path) -> Result<Mount, String> {
        let image = image.to_str().ok_or("the image path is not UTF-8")?;
        Mount::new(dir, &["-t", "ext4", "-o", "loop", image])
    }

    fn new(dir: &Path, args: &[&str]) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(args)
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount {} {} failed: {}",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmount, retrying while busy; lazily as a last resort. Never panics
    /// (it may run while unwinding).
    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        self.mounted = false;
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !wait_until(Duration::from_secs(10), || umount(false)) && !umount(true) {
            eprintln!("warning: could not unmount {}", self.dir.display());
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

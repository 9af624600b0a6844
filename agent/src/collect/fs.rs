//! Filesystem space from the mounts file and `statvfs`, as `df` shows it.
//!
//! Only local, disk-backed filesystems count: the device is a path (`/dev/sda1`,
//! `/dev/mapper/vg-root`), or the filesystem is ZFS, or it is the overlay mounted on
//! `/` of a container. Pseudo filesystems (proc, sysfs, tmpfs, cgroup, …), read-only
//! images (squashfs snaps, ISO 9660) and network filesystems are skipped — the last
//! because `statvfs` on a dead NFS server can block the agent indefinitely. A device
//! mounted more than once (bind mounts) is counted once, under its shortest mount
//! path.
//!
//! Units: GB is 10^9 bytes, as in Ganglia. `fs_<mount>_free` is the space available
//! to unprivileged users (`f_bavail`, df's "Avail"), and `fs_<mount>_used` is df's
//! Use%: used / (used + available) × 100, where used = blocks − free blocks, so
//! blocks reserved for root count neither as used nor as available.

use std::borrow::Cow;

use super::{gauge, metric_names, Reading};

const GB: f64 = 1e9;

/// One line of the mounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry<'a> {
    pub device: Cow<'a, str>,
    pub path: Cow<'a, str>,
    pub fstype: &'a str,
}

/// Parses the lines of a mounts file (`/proc/self/mounts` format); lines with fewer
/// than three fields are skipped.
pub(crate) fn parse_mounts(text: &str) -> impl Iterator<Item = MountEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let device = unescape(f.next()?);
        let path = unescape(f.next()?);
        let fstype = f.next()?;
        Some(MountEntry { device, path, fstype })
    })
}

/// Undoes the kernel's octal escapes in mount fields (`\040` for a space, `\011`,
/// `\012`, `\134`); anything that is not a valid escape is kept as it is.
fn unescape(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v =
                    u32::from(digits[0] - b'0') * 64 + u32::from(digits[1] - b'0') * 8 + u32::from(digits[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Filesystem types that never hold user data on a local disk.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "udf",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "fuse.snapfuse",
    "nfsd",
];

/// Network filesystems: `statvfs` on them can hang when the server is gone.
const NETWORK: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "fuse.s3fs",
    "fuse.rclone",
    "9p",
    "afs",
    "lustre",
    "gpfs",
    "beegfs",
    "ocfs2",
];

/// Whether a mount is a local, disk-backed filesystem (see module docs).
pub(crate) fn is_local_disk(m: &MountEntry<'_>) -> bool {
    if PSEUDO.contains(&m.fstype) || NETWORK.contains(&m.fstype) {
        return false;
    }
    match m.fstype {
        "overlay" => m.path == "/",
        "zfs" => true,
        _ => m.device.starts_with('/'),
    }
}

/// The filesystems to report from a mounts file: local disks, one mount per device
/// (the shortest path), sorted by mount path.
pub(crate) fn select_filesystems(text: &str) -> Vec<MountEntry<'_>> {
    let mut all: Vec<MountEntry<'_>> = parse_mounts(text).filter(is_local_disk).collect();
    // Overlay mounts all have the device "overlay"; only `/` is kept, so no clash.
    all.sort_by(|a, b| a.device.cmp(&b.device).then(a.path.len().cmp(&b.path.len())).then(a.path.cmp(&b.path)));
    all.dedup_by(|later, first| later.device == first.device);
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

/// Space of one filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FsSpace {
    pub total: f64,
    pub avail: f64,
    /// df's Use%; `None` when the filesystem reports no blocks at all.
    pub used_pct: Option<f64>,
}

/// Space from `statvfs` figures (block size, blocks, free blocks, blocks available to
/// unprivileged users).
pub(crate) fn space(frsize: u64, blocks: u64, bfree: u64, bavail: u64) -> FsSpace {
    let used = blocks.saturating_sub(bfree);
    let denominator = used.saturating_add(bavail);
    FsSpace {
        total: blocks as f64 * frsize as f64,
        avail: bavail as f64 * frsize as f64,
        used_pct: (denominator > 0).then(|| used as f64 * 100.0 / denominator as f64),
    }
}

/// A filesystem to report, with its metrics' names and descriptions, prepared when the
/// mount table is read (every 20 collections) rather than formatted every collection.
#[derive(Debug)]
pub(crate) struct Filesystem {
    path: String,
    /// `fs_<sanitized path>_total`, `_free`, `_used`.
    names: [String; 3],
    descriptions: [String; 3],
}

/// The filesystems of a mount table, in the order [`select_filesystems`] gives.
pub(crate) fn prepare(text: &str) -> Vec<Filesystem> {
    select_filesystems(text)
        .into_iter()
        .map(|m| {
            let path = m.path.into_owned();
            Filesystem {
                names: metric_names("fs", &path, ["total", "free", "used"]),
                descriptions: [
                    format!("Size of the filesystem on {path}."),
                    format!("Space on {path} available to unprivileged users (df Avail)."),
                    format!("Share of {path} in use (df Use%)."),
                ],
                path,
            }
        })
        .collect()
}

/// Reads the space of every prepared filesystem; a mount that cannot be read is
/// returned in `failed` with its error and left out.
pub(crate) fn read_filesystems(
    list: &[Filesystem],
    out: &mut Vec<Reading>,
    failed: &mut Vec<(String, rustix::io::Errno)>,
) {
    // Names already reported this time; a handful, so a linear search.
    let mut reported: Vec<&str> = Vec::new();
    let (mut total, mut free, mut max_used) = (0.0, 0.0, None::<f64>);
    let mut any = false;
    for fs in list {
        let st = match rustix::fs::statvfs(fs.path.as_str()) {
            Ok(st) => st,
            Err(e) => {
                failed.push((fs.path.clone(), e));
                continue;
            }
        };
        let s = space(st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail);
        any = true;
        total += s.total / GB;
        free += s.avail / GB;
        if let Some(u) = s.used_pct {
            max_used = Some(max_used.map_or(u, |m: f64| m.max(u)));
        }
        // `/var/lib` and `/var_lib` sanitize alike; the first (sorted) one wins.
        if reported.contains(&fs.names[0].as_str()) {
            continue;
        }
        reported.push(&fs.names[0]);
        let [total_name, free_name, used_name] = &fs.names;
        let [total_desc, free_desc, used_desc] = &fs.descriptions;
        out.push(gauge(total_name.clone(), "GB", "disk", total_desc.clone(), s.total / GB));
        out.push(gauge(free_name.clone(), "GB", "disk", free_desc.clone(), s.avail / GB));
        if let Some(u) = s.used_pct {
            out.push(gauge(used_name.clone(), "%", "disk", used_desc.clone(), u));
        }
    }
    if any {
        out.push(gauge("disk_total", "GB", "disk", "Size of all local filesystems.", total));
        out.push(gauge(
            "disk_free",
            "GB",
            "disk",
            "Space available to unprivileged users on all local filesystems.",
            free,
        ));
    }
    if let Some(u) = max_used {
        out.push(gauge("part_max_used", "%", "disk", "Use% of the fullest local filesystem.", u));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, value};
    use ganglion_proto::name::sanitize;
    use proptest::prelude::*;

    #[test]
    fn selects_local_disks_once_each() {
        let text = std::fs::read_to_string(fixture("vm/mounts")).unwrap();
        let got: Vec<(String, String)> =
            select_filesystems(&text).into_iter().map(|m| (m.device.into_owned(), m.path.into_owned())).collect();
        let want = [
            ("/dev/mapper/vg0-root", "/"),
            ("/dev/nvme0n1p2", "/boot"),
            ("/dev/nvme0n1p1", "/boot/efi"),
            ("/dev/md0", "/data"),
            ("/dev/sdb1", "/mnt/My Disk"),
            ("tank/home", "/tank/home"),
            ("/dev/mapper/vg0-var", "/var"),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(d, p)| (d.to_string(), p.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn container_overlay_root_counts() {
        let text = "overlay / overlay rw,relatime,lowerdir=/a,upperdir=/b 0 0\noverlay /other overlay rw 0 0\n\
                    /dev/vda /etc/hosts ext4 rw 0 0\n";
        let paths: Vec<_> = select_filesystems(text).into_iter().map(|m| m.path.into_owned()).collect();
        assert_eq!(paths, ["/", "/etc/hosts"]);
    }

    #[test]
    fn unescapes_octal_escapes() {
        assert_eq!(unescape(r"/mnt/My\040Disk"), "/mnt/My Disk");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/bad\9xx\04"), r"/bad\9xx\04");
        assert_eq!(unescape(r"\777"), r"\777");
    }

    #[test]
    fn computes_space_like_df() {
        // 100 blocks of 4 KiB, 30 free, 25 available (5 reserved for root).
        let s = space(4096, 100, 30, 25);
        assert_eq!(s.total, 409_600.0);
        assert_eq!(s.avail, 102_400.0);
        // used = 70, Use% = 70 / (70 + 25).
        assert_eq!(s.used_pct, Some(70.0 * 100.0 / 95.0));
        assert_eq!(space(4096, 0, 0, 0).used_pct, None);
    }

    #[test]
    fn reads_real_filesystems_and_skips_missing_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "/dev/root / ext4 rw 0 0\n/dev/x {} ext4 rw 0 0\n/dev/gone /no/such/mount ext4 rw 0 0\nproc /proc proc rw 0 0\n",
            dir.path().display()
        );
        let mut out = Vec::new();
        let mut failed = Vec::new();
        read_filesystems(&prepare(&text), &mut out, &mut failed);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "/no/such/mount");
        assert!(value(&out, "fs_root_total").unwrap() > 0.0);
        assert!(value(&out, "disk_total").unwrap() >= value(&out, "fs_root_total").unwrap());
        let used = value(&out, "part_max_used").unwrap();
        assert!((0.0..=100.0).contains(&used), "{used}");
        assert!(out.iter().all(|r| !r.name.contains("proc")));
    }

    #[test]
    fn mounts_that_sanitize_alike_report_once_and_count_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (nested, flat) = (dir.path().join("x/y"), dir.path().join("x_y"));
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::create_dir(&flat).unwrap();
        let name = format!("fs_{}_total", sanitize(&flat.display().to_string()));
        let text = format!("/dev/b {} ext4 rw 0 0\n/dev/a {} ext4 rw 0 0\n", flat.display(), nested.display());
        let list = prepare(&text);
        let mut out = Vec::new();
        read_filesystems(&list, &mut out, &mut Vec::new());
        let totals: Vec<_> = out.iter().filter(|r| r.name == name).collect();
        assert_eq!(totals.len(), 1, "{out:?}");
        // `x/y` sorts before `x_y`, so its path is the one described.
        assert!(totals[0].desc.description.contains("/x/y."), "{:?}", totals[0].desc.description);
        assert_eq!(value(&out, "disk_total"), Some(2.0 * totals[0].value));

        // When the first cannot be read, the second reports under the name.
        std::fs::remove_dir(&nested).unwrap();
        let mut out = Vec::new();
        let mut failed = Vec::new();
        read_filesystems(&list, &mut out, &mut failed);
        assert_eq!(failed.len(), 1);
        let total = out.iter().find(|r| r.name == name).unwrap();
        assert!(total.desc.description.contains("/x_y."), "{:?}", total.desc.description);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,400}", esc in "[a-z/ \\\\0-9]{0,40}") {
            let _ = select_filesystems(&s);
            let _ = unescape(&esc);
            let _ = unescape(&s);
        }

        #[test]
        fn used_percent_stays_in_range(frsize in 1u64..1 << 20, blocks: u32, bfree: u32, bavail: u32) {
            let s = space(frsize, u64::from(blocks), u64::from(bfree), u64::from(bavail));
            if let Some(u) = s.used_pct {
                prop_assert!((0.0..=100.0).contains(&u));
            }
        }
    }
}

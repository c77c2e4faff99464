//! Image archives made in memory, for a node with no registry to pull from: a ustar
//! writer (regular files, directories, symlinks) and the docker-archive layout
//! (`manifest.json`, an image config, one layer) that containerd imports. The pause image
//! and the test images are built this way.

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::json;

/// One entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// The image config fields keelson's images set.
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    /// The reference the image is imported under (`docker.io/library/busybox:latest`).
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// `uid[:gid]`, empty for root.
    pub user: String,
}

const BLOCK: usize = 512;

/// Writes `value` as a zero-padded octal field of `width` bytes (the last one NUL).
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let bytes = text.as_bytes();
    // A value too wide for the field keeps its low digits; callers stay within 8 GiB.
    let start = bytes.len().saturating_sub(width);
    field[..width].copy_from_slice(&bytes[start..]);
    field[width] = 0;
}

fn header(path: &str, mode: u32, size: u64, kind: u8, link: &str) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    // Long names go in the ustar prefix field, split at a slash.
    let (prefix, name) = if path.len() > 100 {
        match path[..path.len().min(156)].rfind('/') {
            Some(cut) if path.len() - cut - 1 <= 100 => (&path[..cut], &path[cut + 1..]),
            _ => ("", path),
        }
    } else {
        ("", path)
    };
    let name = &name.as_bytes()[..name.len().min(100)];
    block[..name.len()].copy_from_slice(name);
    octal(&mut block[100..108], u64::from(mode));
    octal(&mut block[108..116], 0); // uid
    octal(&mut block[116..124], 0); // gid
    octal(&mut block[124..136], size);
    octal(&mut block[136..148], 0); // mtime: reproducible layers
    block[156] = kind;
    let link = &link.as_bytes()[..link.len().min(100)];
    block[157..157 + link.len()].copy_from_slice(link);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    let prefix = &prefix.as_bytes()[..prefix.len().min(155)];
    block[345..345 + prefix.len()].copy_from_slice(prefix);
    // The checksum is computed with its own field as spaces.
    block[148..156].copy_from_slice(b"        ");
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    octal(&mut block[148..155], sum);
    block[155] = b' ';
    block
}

/// A ustar archive of `entries`, in order, ending with two zero blocks.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        match entry {
            Entry::File { path, mode, data } => {
                out.extend_from_slice(&header(path, *mode, data.len() as u64, b'0', ""));
                out.extend_from_slice(data);
                let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
                out.resize(out.len() + pad, 0);
            }
            Entry::Dir { path, mode } => {
                let path = format!("{}/", path.trim_end_matches('/'));
                out.extend_from_slice(&header(&path, *mode, 0, b'5', ""));
            }
            Entry::Symlink { path, target } => {
                out.extend_from_slice(&header(path, 0o777, 0, b'2', target));
            }
        }
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

fn sha256_hex(data: &[u8]) -> String {
    digest(&SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The architecture name images use for this machine.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A docker archive (as `docker save` writes) of one image with one layer.
pub fn docker_archive(config: &ImageConfig, layer: &[Entry]) -> Vec<u8> {
    let layer = tar(layer);
    let layer_hex = sha256_hex(&layer);
    let mut settings = json!({});
    if !config.entrypoint.is_empty() {
        settings["Entrypoint"] = json!(config.entrypoint);
    }
    if !config.cmd.is_empty() {
        settings["Cmd"] = json!(config.cmd);
    }
    if !config.env.is_empty() {
        settings["Env"] = json!(config.env);
    }
    if !config.user.is_empty() {
        settings["User"] = json!(config.user);
    }
    let image_config = json!({
        "architecture": architecture(),
        "os": "linux",
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
    })
    .to_string()
    .into_bytes();
    let config_name = format!("{}.json", sha256_hex(&image_config));
    let layer_name = format!("{layer_hex}/layer.tar");
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [config.name],
        "Layers": [layer_name],
    }])
    .to_string()
    .into_bytes();
    tar(&[
        Entry::File {
            path: "manifest.json".into(),
            mode: 0o644,
            data: manifest,
        },
        Entry::File {
            path: config_name,
            mode: 0o644,
            data: image_config,
        },
        Entry::Dir {
            path: layer_hex,
            mode: 0o755,
        },
        Entry::File {
            path: layer_name,
            mode: 0o644,
            data: layer,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of a ustar archive: (type, name, link target, data).
    fn read(archive: &[u8]) -> Vec<(u8, String, String, Vec<u8>)> {
        let field = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let number = |b: &[u8]| u64::from_str_radix(field(b).trim(), 8).unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut at = 0;
        while at + BLOCK <= archive.len() && archive[at..at + BLOCK].iter().any(|&b| b != 0) {
            let h = &archive[at..at + BLOCK];
            let mut blank = h.to_vec();
            blank[148..156].copy_from_slice(b"        ");
            let sum: u64 = blank.iter().map(|&b| u64::from(b)).sum();
            assert_eq!(
                number(&h[148..156]),
                sum,
                "checksum of {}",
                field(&h[..100])
            );
            assert_eq!(&h[257..263], b"ustar\0");
            let prefix = field(&h[345..500]);
            let name = field(&h[..100]);
            let name = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let size = usize::try_from(number(&h[124..136])).unwrap_or(usize::MAX);
            let data = archive[at + BLOCK..at + BLOCK + size].to_vec();
            out.push((h[156], name, field(&h[157..257]), data));
            at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
        }
        assert_eq!(archive.len() - at, 2 * BLOCK, "two zero blocks end it");
        out
    }

    #[test]
    fn tar_entries_read_back_with_valid_checksums() {
        let long = format!("{}/{}", "d".repeat(80), "f".repeat(90));
        let archive = tar(&[
            Entry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            Entry::File {
                path: "bin/busybox".into(),
                mode: 0o755,
                data: vec![7; 1000],
            },
            Entry::Symlink {
                path: "bin/sh".into(),
                target: "busybox".into(),
            },
            Entry::File {
                path: long.clone(),
                mode: 0o644,
                data: b"x".to_vec(),
            },
        ]);
        assert_eq!(archive.len() % BLOCK, 0);
        let entries = read(&archive);
        assert_eq!(entries.len(), 4);
        assert_eq!((entries[0].0, entries[0].1.as_str()), (b'5', "bin/"));
        assert_eq!(entries[1].1, "bin/busybox");
        assert_eq!(entries[1].3, vec![7; 1000]);
        assert_eq!((entries[2].0, entries[2].2.as_str()), (b'2', "busybox"));
        assert_eq!(entries[3].1, long);
    }

    #[test]
    fn docker_archives_name_the_image_and_address_blobs_by_digest() {
        let config = ImageConfig {
            name: "localhost/keelson/pause:1".into(),
            entrypoint: vec!["/pause".into()],
            user: "65535:65535".into(),
            ..Default::default()
        };
        let entries = read(&docker_archive(
            &config,
            &[Entry::File {
                path: "pause".into(),
                mode: 0o755,
                data: vec![1, 2, 3],
            }],
        ));
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.1 == name)
                .map(|e| e.3.clone())
                .unwrap_or_default()
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&find("manifest.json")).unwrap_or_default();
        assert_eq!(manifest[0]["RepoTags"][0], "localhost/keelson/pause:1");
        let config_name = manifest[0]["Config"].as_str().unwrap_or_default();
        let image_config = find(config_name);
        assert_eq!(format!("{}.json", sha256_hex(&image_config)), config_name);
        let image_config: serde_json::Value =
            serde_json::from_slice(&image_config).unwrap_or_default();
        assert_eq!(image_config["config"]["Entrypoint"][0], "/pause");
        assert_eq!(image_config["config"]["User"], "65535:65535");
        assert_eq!(image_config["os"], "linux");
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap_or_default();
        let layer = find(layer_name);
        let diff_id = format!("sha256:{}", sha256_hex(&layer));
        assert_eq!(image_config["rootfs"]["diff_ids"][0], diff_id.as_str());
        assert_eq!(layer_name, format!("{}/layer.tar", sha256_hex(&layer)));
        let files = read(&layer);
        assert_eq!(
            (files[0].1.as_str(), files[0].3.as_slice()),
            ("pause", &[1u8, 2, 3][..])
        );
    }
}

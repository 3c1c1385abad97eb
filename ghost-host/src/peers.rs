//! `<data-dir>/peers.txt`: the addresses of the nodes known at the last save, one per
//! line, used as extra seeds at the next start so that a node whose configured seeds are
//! gone still finds the network after any downtime.

use std::fs;
use std::path::Path;

use proto_core::keys::Address;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "peers.txt";
/// Most addresses kept: enough to find the network again, bounded.
pub const MAX_SAVED: usize = 64;

/// The addresses saved at the last stop; a missing or damaged file gives none.
#[must_use]
pub fn read(path: &Path) -> Vec<Address> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Address::new(l.trim()).ok())
        .take(MAX_SAVED)
        .collect()
}

/// Replaces the saved addresses (write, then rename, so a crash leaves the old list).
/// An empty list keeps the old one: a node cut off from all peers still knows whom to ask.
pub fn write(path: &Path, addresses: &[String]) {
    if addresses.is_empty() {
        return;
    }
    let text: String = addresses
        .iter()
        .take(MAX_SAVED)
        .map(|a| format!("{a}\n"))
        .collect();
    let tmp = path.with_extension("tmp");
    if let Err(e) = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, path)) {
        tracing::warn!(error = %e, "cannot save the known nodes to {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_addresses_come_back_and_an_empty_list_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(read(&path).is_empty(), "no file, no seeds");
        write(&path, &["127.0.0.1:7101".into(), "node-b:7100".into()]);
        write(&path, &[]);
        let back: Vec<String> = read(&path).iter().map(|a| a.as_str().to_owned()).collect();
        assert_eq!(back, ["127.0.0.1:7101", "node-b:7100"]);
        fs::write(&path, "not an address\u{7f}\n127.0.0.1:1\n").unwrap();
        assert_eq!(read(&path).len(), 1, "damaged lines are skipped");
    }
}

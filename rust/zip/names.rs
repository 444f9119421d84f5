//! Member names: what a safe name is, and the set that refuses names which would collide once
//! extracted (duplicates, case or Unicode-form twins, a file used as a directory).
#![deny(clippy::arithmetic_side_effects)]

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

/// A name quoted for a message, with control characters and quotes escaped.
pub(crate) fn quote(name: &str) -> String {
    format!("'{}'", name.escape_debug())
}

/// Why `name` is not a safe member name, if it is not. Directory names end with `/`.
pub fn check_name(name: &str, max_len: usize) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > max_len {
        return Err(format!(
            "name is {} bytes long, over the limit of {max_len}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Err("name contains a NUL byte".into());
    }
    if name.contains('\\') {
        return Err("name contains a backslash (a Windows path separator)".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name contains a control character".into());
    }
    if name.starts_with('/') {
        return Err("name is an absolute path".into());
    }
    let body = name.strip_suffix('/').unwrap_or(name);
    for part in body.split('/') {
        if let [first, b':', ..] = part.as_bytes() {
            if first.is_ascii_alphabetic() {
                return Err(format!(
                    "name contains a drive letter ({:?})",
                    part.get(..2).unwrap_or(part)
                ));
            }
        }
        match part {
            "" => return Err("name has an empty path component ('//')".into()),
            "." => return Err("name contains a '.' component".into()),
            ".." => return Err("name escapes the bundle (contains '..')".into()),
            _ => {}
        }
    }
    Ok(())
}

/// The key two names collide on when extracted to a case-insensitive or normalising file system.
fn fold(name: &str) -> String {
    let composed: String = name.nfc().collect();
    composed.to_uppercase().to_lowercase().nfc().collect()
}

/// Records names and refuses duplicates, case-folded duplicates, and a file used as a directory.
#[derive(Default)]
pub(crate) struct NameSet {
    /// Folded name (without a trailing `/`) to (name, is_dir).
    seen: HashMap<String, (String, bool)>,
}

impl NameSet {
    pub(crate) fn insert(&mut self, name: &str, is_dir: bool) -> std::result::Result<(), String> {
        let key = fold(name.strip_suffix('/').unwrap_or(name));
        if let Some((other, _)) = self.seen.get(&key) {
            return Err(if other == name {
                "duplicate name".into()
            } else {
                format!(
                    "name collides with {} (they differ only in case, Unicode form or a trailing '/')",
                    quote(other)
                )
            });
        }
        self.seen.insert(key, (name.to_string(), is_dir));
        Ok(())
    }

    /// Called once every name is in: refuses `a/b` when `a` is a file.
    pub(crate) fn check_parents(&self) -> std::result::Result<(), (String, String)> {
        for (key, (name, _)) in &self.seen {
            let parents = key
                .match_indices('/')
                .map(|(i, _)| key.get(..i).unwrap_or(""));
            for parent in parents {
                if let Some((pname, false)) = self.seen.get(parent) {
                    return Err((
                        name.clone(),
                        format!("its parent {} is a file, not a directory", quote(pname)),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_say_why() {
        for (name, want) in [
            ("models/../x.pth", "escapes the bundle"),
            ("/etc/passwd", "absolute path"),
            ("C:/x", "drive letter"),
            ("c:x", "drive letter"),
            ("a\\b", "backslash"),
            ("a\0b", "NUL"),
            ("a\nb", "control character"),
            ("", "empty"),
            ("a//b", "empty path component"),
            ("./a", "'.' component"),
        ] {
            let why = check_name(name, 4096).unwrap_err();
            assert!(why.contains(want), "{name:?}: {why}");
        }
        assert!(check_name(&"a".repeat(10), 9)
            .unwrap_err()
            .contains("limit of 9"));
        for ok in ["a", "models/x.pth", "dir/", "caf\u{e9}", "1:2"] {
            assert_eq!(check_name(ok, 4096), Ok(()), "{ok}");
        }
    }

    #[test]
    fn collisions_are_refused() {
        let mut set = NameSet::default();
        set.insert("Model.bin", false).unwrap();
        assert!(set
            .insert("Model.bin", false)
            .unwrap_err()
            .contains("duplicate"));
        assert!(set.insert("model.BIN", false).unwrap_err().contains("case"));
        set.insert("caf\u{e9}", false).unwrap();
        assert!(set.insert("cafe\u{301}", false).is_err());
        set.insert("Model.bin/inner", false).unwrap();
        let (name, why) = set.check_parents().unwrap_err();
        assert_eq!(name, "Model.bin/inner");
        assert!(why.contains("is a file, not a directory"), "{why}");
    }
}

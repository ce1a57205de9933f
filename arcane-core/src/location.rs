//! Storage locations in specs: object-store URLs, or plain local paths.

use crate::error::{Error, Result};

/// The URL of a storage location given in a spec.
///
/// A value with a scheme (`s3://bucket/prefix`, `file:///data/out`, `memory:///x`) is returned
/// unchanged. A value without one is a local directory: relative paths (`./arcane-out`,
/// `examples/data`) are resolved against the working directory, and the result is its
/// `file://` URL, so that specs for local runs need no absolute paths. `field` names the spec
/// field in errors.
///
/// ```
/// let url = arcane_core::location::location_url("arcane-out", "spec.sink.url").unwrap();
/// assert!(url.starts_with("file:///") && url.ends_with("/arcane-out"));
/// assert_eq!(arcane_core::location::location_url("s3://b/p", "f").unwrap(), "s3://b/p");
/// ```
pub fn location_url(raw: &str, field: &str) -> Result<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Error::config(
            field,
            "is empty; give an object-store URL (s3://bucket/prefix, file:///path) or a local path",
        ));
    }
    if has_scheme(trimmed) {
        return Ok(trimmed.to_string());
    }
    let path = std::path::Path::new(trimmed);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| {
                Error::config(
                    field,
                    format!(
                        "cannot resolve the relative path {trimmed:?} ({e}); use an absolute path or a file:// URL"
                    ),
                )
            })?
            .join(path)
    };
    let mut normalized = std::path::PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    let text = normalized.to_string_lossy();
    let mut url = String::with_capacity(text.len() + 8);
    url.push_str("file://");
    for c in text.chars() {
        match c {
            ' ' => url.push_str("%20"),
            '%' => url.push_str("%25"),
            '#' => url.push_str("%23"),
            '?' => url.push_str("%3F"),
            c => url.push(c),
        }
    }
    if trimmed.ends_with('/') && !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

/// `scheme://…` with an RFC 3986 scheme of at least two characters (so `C:\` is not one).
fn has_scheme(value: &str) -> bool {
    match value.split_once("://") {
        Some((scheme, _)) => {
            scheme.len() >= 2
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_file_urls_and_urls_pass_through() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            location_url("./out/a b/", "f").unwrap(),
            format!("file://{}/out/a%20b/", cwd.display())
        );
        assert_eq!(
            location_url("/data/../srv/x", "f").unwrap(),
            "file:///srv/x"
        );
        assert_eq!(location_url("az://c/p", "f").unwrap(), "az://c/p");
        assert_eq!(location_url("file:///abs", "f").unwrap(), "file:///abs");
        let err = location_url(" ", "spec.sink.url").unwrap_err();
        assert!(
            err.to_string().starts_with("spec.sink.url: is empty"),
            "{err}"
        );
    }
}

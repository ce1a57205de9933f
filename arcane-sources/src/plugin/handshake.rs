//! The handshake line a plugin prints on stdout once it listens:
//! `ARCANE-PLUGIN|1|unix|/path/to.sock` (magic, protocol version, network, address), the
//! go-plugin convention.

use std::path::PathBuf;

/// The first field of the handshake line.
pub const HANDSHAKE_MAGIC: &str = "ARCANE-PLUGIN";

/// The plugin protocol version this runner speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest handshake line read; a longer one is refused (it is not a handshake).
pub const MAX_HANDSHAKE_LINE: usize = 4096;

/// A parsed handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The protocol version the plugin speaks.
    pub version: u32,
    /// The socket the plugin listens on (network `unix`).
    pub socket: PathBuf,
}

/// Why a handshake line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The line is not `ARCANE-PLUGIN|VERSION|NETWORK|ADDRESS`.
    #[error(
        "printed {line:?} instead of its handshake line `{HANDSHAKE_MAGIC}|{PROTOCOL_VERSION}|unix|/path/to.sock`; a plugin must print that line first on stdout (log to stderr), e.g. with the Python or Rust plugin SDK"
    )]
    NotAHandshake {
        /// The line (shortened).
        line: String,
    },
    /// The version field is not a number.
    #[error("handshake line has protocol version {found:?}, which is not a number")]
    BadVersion {
        /// The field.
        found: String,
    },
    /// A protocol version this runner does not speak.
    #[error(
        "speaks plugin protocol version {version}, this runner speaks version {PROTOCOL_VERSION}; build the plugin with an SDK for protocol {PROTOCOL_VERSION} or use a runner that speaks {version}"
    )]
    UnsupportedVersion {
        /// The plugin's version.
        version: u32,
    },
    /// A network other than `unix`.
    #[error(
        "handshake line names network {network:?}; only \"unix\" (a Unix domain socket) is supported"
    )]
    UnsupportedNetwork {
        /// The network field.
        network: String,
    },
    /// No socket path.
    #[error("handshake line has no socket path after the network")]
    EmptyAddress,
}

/// Parse one handshake line (a trailing `\n`/`\r\n` is ignored). Never panics.
pub fn parse_handshake(line: &str) -> Result<Handshake, HandshakeError> {
    let line = line.trim_end_matches(['\n', '\r']);
    let mut fields = line.splitn(4, '|');
    let (Some(magic), Some(version), Some(network), Some(address)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(not_a_handshake(line));
    };
    if magic != HANDSHAKE_MAGIC {
        return Err(not_a_handshake(line));
    }
    let version: u32 = version
        .trim()
        .parse()
        .map_err(|_| HandshakeError::BadVersion {
            found: shorten(version),
        })?;
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::UnsupportedVersion { version });
    }
    if network != "unix" {
        return Err(HandshakeError::UnsupportedNetwork {
            network: shorten(network),
        });
    }
    if address.trim().is_empty() {
        return Err(HandshakeError::EmptyAddress);
    }
    Ok(Handshake {
        version,
        socket: PathBuf::from(address),
    })
}

fn not_a_handshake(line: &str) -> HandshakeError {
    HandshakeError::NotAHandshake {
        line: shorten(line),
    }
}

/// At most 120 characters of `text`, cut on a character boundary.
fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_good_line_parses() {
        let h = parse_handshake("ARCANE-PLUGIN|1|unix|/tmp/p.sock\n").unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.socket, PathBuf::from("/tmp/p.sock"));
        // A path may contain the separator.
        let h = parse_handshake("ARCANE-PLUGIN|1|unix|/tmp/a|b.sock\r\n").unwrap();
        assert_eq!(h.socket, PathBuf::from("/tmp/a|b.sock"));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            ("", "instead of its handshake line"),
            ("Listening on 8080", "instead of its handshake line"),
            ("1|unix|/tmp/x|y", "instead of its handshake line"),
            ("ARCANE-PLUGIN|one|unix|/x", "not a number"),
            (
                "ARCANE-PLUGIN|2|unix|/x",
                "speaks plugin protocol version 2",
            ),
            ("ARCANE-PLUGIN|1|tcp|127.0.0.1:1", "only \"unix\""),
            ("ARCANE-PLUGIN|1|unix| ", "no socket path"),
        ];
        for (line, expected) in cases {
            let e = parse_handshake(line).unwrap_err().to_string();
            assert!(e.contains(expected), "{line:?}: {e}");
        }
        let long = "é".repeat(10_000);
        let e = parse_handshake(&long).unwrap_err().to_string();
        assert!(e.len() < 1000, "a long line is shortened in the message");
    }

    proptest! {
        #[test]
        fn never_panics(line in ".*") {
            let _ = parse_handshake(&line);
        }

        #[test]
        fn never_panics_near_the_format(v in ".{0,5}", n in ".{0,6}", a in ".{0,10}") {
            let _ = parse_handshake(&format!("ARCANE-PLUGIN|{v}|{n}|{a}"));
        }
    }
}

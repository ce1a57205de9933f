//! The chart's `crds/` files are the generated CRDs, byte for byte.
//!
//! Until `arcane spec-schema KIND` exposes the built-in kinds' real spec schemas, the files are
//! generated from the SAMPLE spec types in `tests/common` and say so in their first line.
//! Regenerate with `ARCANE_UPDATE_CRDS=1 cargo nextest run -p arcane-deploy chart_crds`.

mod common;

use common::{repo_root, sample_kinds};

const SAMPLE_HEADER: &str = "# SAMPLE: generated from the sample spec types in arcane-deploy/tests/common until `arcane crd KIND` can use the real ones.\n";

#[test]
fn chart_crds_are_up_to_date() {
    let dir = repo_root().join("deploy/chart/crds");
    let update = std::env::var_os("ARCANE_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for kind in sample_kinds() {
        let expected = format!("{SAMPLE_HEADER}{}", arcane_deploy::crd_yaml(&kind).unwrap());
        let path = dir.join(format!("{}.yaml", kind.plural));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &expected).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(actual) if actual == expected => {}
            _ => stale.push(path.display().to_string()),
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; regenerate with ARCANE_UPDATE_CRDS=1 cargo nextest run -p arcane-deploy chart_crds"
    );
}

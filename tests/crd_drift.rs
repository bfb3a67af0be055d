//! The generated CRDs in crds/ and the chart's copies must match the Rust types
//! (regenerate with `make crds`).

#[test]
fn crds_directory_matches_the_rust_types() {
    for (file, want) in managed_secrets::crd::all_crds() {
        for dir in ["crds", "charts/managed-secrets/files/crds"] {
            let full = format!("{}/{dir}/{file}", env!("CARGO_MANIFEST_DIR"));
            let got = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
            assert!(
                got == want,
                "{dir}/{file} is out of date with src/crd/: run `make crds` and commit"
            );
        }
    }
}

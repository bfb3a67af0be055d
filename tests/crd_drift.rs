//! The generated CRD in crds/ and the chart's copy must match the Rust types
//! (regenerate with `make crds`).

#[test]
fn crds_directory_matches_the_rust_types() {
    let want = managed_secrets::crd::crd_yaml();
    for path in [
        "crds/managedsecrets.io_managedsecrets.yaml",
        "charts/managed-secrets/crds/managedsecrets.io_managedsecrets.yaml",
    ] {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        let got = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
        assert!(
            got == want,
            "{path} is out of date with src/crd.rs: run `make crds` and commit"
        );
    }
}

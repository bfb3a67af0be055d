//! Inputs that `make fuzz` once found failing (fuzz/regressions/render/), replayed through the same
//! checks on every `make test`.

mod fuzz_check;
use arbitrary::{Arbitrary, Unstructured};

#[test]
fn every_saved_fuzz_finding_stays_fixed() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions/render");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let input = fuzz_check::Input::arbitrary_take_rest(Unstructured::new(&bytes))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fuzz_check::check(&input);
        n += 1;
    }
    assert!(n > 0, "the regression corpus is empty");
}

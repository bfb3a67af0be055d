//! Subcommands besides `run`: offline checks for GitOps pipelines (`check`, `render`) and
//! `release-finalizers` for a cluster whose operator is gone.

pub mod check;
pub mod preview;
pub mod release;

/// Splits a multi-document YAML text into documents with the 1-based line each starts on
/// (its first line after the `---` separator). Empty documents are left out.
pub fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start = 1;
    let mut cur = String::new();
    let flush = |start: usize, cur: &mut String, out: &mut Vec<(usize, String)>| {
        let has_content = cur
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if has_content {
            out.push((start, std::mem::take(cur)));
        }
        cur.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let separator =
            line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "...";
        if separator {
            flush(start, &mut cur, &mut out);
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    flush(start, &mut cur, &mut out);
    out
}

/// The line (1-based, within `doc`, which starts on `start`) of the field at `path` (keys and
/// array indices, as in a JSON pointer), or of the deepest ancestor found; `start` if none is.
/// A heuristic over block-style YAML: each key is looked for after its parent, deeper than it.
pub fn locate(doc: &str, start: usize, path: &[String]) -> usize {
    let lines: Vec<&str> = doc.lines().collect();
    // (indentation of the key text, counting "- " as indentation; the text)
    let key_at = |l: &str| -> (usize, String) {
        let body = l.trim_start();
        let mut ind = l.len() - body.len();
        let mut b = body;
        while let Some(r) = b.strip_prefix("- ") {
            let r2 = r.trim_start();
            ind += 2 + (r.len() - r2.len());
            b = r2;
        }
        (ind, b.to_string())
    };
    let mut from = 0;
    let mut indent: Option<usize> = None;
    let mut found = start;
    for seg in path {
        if let Ok(n) = seg.parse::<usize>() {
            // The n-th item of a block sequence: lines starting with "- " at one indentation.
            let mut items = lines.iter().enumerate().skip(from).filter(|(_, l)| {
                let body = l.trim_start();
                (body.starts_with("- ") || body == "-")
                    && indent.is_none_or(|i| l.len() - body.len() >= i)
            });
            let Some((first, l)) = items.next() else {
                break;
            };
            let dash = l.len() - l.trim_start().len();
            let hit = std::iter::once((first, *l))
                .chain(items.map(|(i, l)| (i, *l)))
                .take_while(|(_, l)| {
                    let body = l.trim_start();
                    body.is_empty() || l.len() - body.len() >= dash
                })
                .filter(|(_, l)| l.len() - l.trim_start().len() == dash)
                .nth(n);
            match hit {
                Some((i, _)) => {
                    from = i;
                    indent = Some(dash);
                    found = start + i;
                }
                None => break,
            }
            continue;
        }
        let hit = lines.iter().enumerate().skip(from).find(|(_, l)| {
            let (ind, body) = key_at(l);
            let key_here = body.starts_with(&format!("{seg}:"))
                || body.starts_with(&format!("\"{seg}\":"))
                || body.starts_with(&format!("'{seg}':"));
            key_here && indent.is_none_or(|i| ind > i)
        });
        match hit {
            Some((i, l)) => {
                from = i + 1;
                indent = Some(key_at(l).0);
                found = start + i;
            }
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('/').map(str::to_string).collect()
    }

    #[test]
    fn documents_keep_their_first_line() {
        let text = "# a comment\n---\na: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n...\n";
        assert_eq!(
            documents(text),
            vec![(3, "a: 1\n".to_string()), (7, "b: 2\nc: 3\n".to_string())]
        );
        assert_eq!(documents("x: 1\n"), vec![(1, "x: 1\n".to_string())]);
        assert_eq!(documents(""), vec![]);
    }

    #[test]
    fn locate_follows_the_path_by_indentation() {
        let doc = "kind: ManagedSecret\nmetadata:\n  name: db\nspec:\n  target:\n    name: x\n  refreshInterval: 5m\n  rollout:\n    targets:\n      - kind: Deployment\n        name: api\n";
        assert_eq!(locate(doc, 10, &path("spec/refreshInterval")), 16);
        assert_eq!(locate(doc, 10, &path("spec/target/name")), 15);
        assert_eq!(locate(doc, 10, &path("metadata/name")), 12);
        assert_eq!(locate(doc, 10, &path("spec/rollout/targets/0/name")), 20);
        assert_eq!(locate(doc, 10, &path("spec/rollout/targets/0")), 19);
        assert_eq!(
            locate(doc, 10, &path("spec/rollout/targets/1")),
            18,
            "no such item"
        );
        let seq = "rules:\n- a: 1\n  b: 2\n- a: 3\n  b: 4\nnext: x\n";
        assert_eq!(locate(seq, 1, &path("rules/1/b")), 5);
        assert_eq!(locate(seq, 1, &path("rules/0/b")), 3);
        assert_eq!(locate(seq, 1, &path("rules/2")), 1);
        assert_eq!(
            locate(doc, 10, &path("spec/missing")),
            13,
            "the deepest ancestor"
        );
        assert_eq!(locate(doc, 10, &[]), 10);
    }
}

//! House rules that code review would otherwise have to remember: every Rust file opens with
//! a `//!` paragraph saying what it owns, and the library's modules depend one way (the
//! allowed list below; no cycle). Rules are stated as absences and checked mechanically.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "crates"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:?}"
    );
}

/// The library's module graph, from the vocabulary up to the front door (ARCHITECTURE.md,
/// "The dependency rule"). Each module may use only the modules listed for it; a module's
/// files (a folder counts as one module) may use each other freely. A new module, or a new
/// edge, is added here on purpose, in review.
const ALLOWED: &[(&str, &[&str])] = &[
    // Vocabulary and neutral plumbing.
    ("model", &[]),
    ("clock", &[]),
    ("locks", &[]),
    ("stdout", &[]),
    ("http", &[]),
    ("report", &["model"]),
    ("activation", &["model"]),
    ("config", &["model", "clock"]),
    ("metrics", &["model", "report"]),
    // The pure core and the boundaries.
    ("mapping", &["model", "config"]),
    ("plan", &["model", "mapping"]),
    ("scim", &["model", "metrics", "http", "clock"]),
    ("store", &["model", "report", "clock"]),
    (
        "source",
        &[
            "model", "config", "mapping", "store", "http", "metrics", "clock", "locks",
        ],
    ),
    (
        "apply",
        &["model", "plan", "report", "scim", "store", "metrics"],
    ),
    (
        "engine",
        &[
            "model", "config", "mapping", "plan", "scim", "store", "source", "apply", "report",
            "metrics", "clock", "locks",
        ],
    ),
    ("status", &["model", "config", "report", "store"]),
    // Drivers get narrow handles; the service owns intake, expiry, PIM and leases.
    (
        "drive",
        &[
            "model",
            "activation",
            "source",
            "store",
            "metrics",
            "report",
            "clock",
        ],
    ),
    (
        "service",
        &[
            "model",
            "activation",
            "apply",
            "clock",
            "config",
            "drive",
            "engine",
            "locks",
            "metrics",
            "report",
            "source",
            "status",
            "store",
        ],
    ),
    (
        "admin",
        &[
            "model",
            "activation",
            "config",
            "metrics",
            "report",
            "service",
            "status",
        ],
    ),
    // The built-in SCIM app is a second, independent implementation of the protocol.
    ("sandbox", &[]),
    (
        "demo",
        &[
            "model",
            "activation",
            "admin",
            "clock",
            "config",
            "engine",
            "mapping",
            "report",
            "sandbox",
            "service",
            "source",
            "status",
            "store",
        ],
    ),
    (
        "cli",
        &[
            "model",
            "activation",
            "admin",
            "clock",
            "config",
            "demo",
            "drive",
            "engine",
            "mapping",
            "metrics",
            "plan",
            "report",
            "sandbox",
            "service",
            "source",
            "status",
            "store",
        ],
    ),
];

/// The top-level module a file under `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The modules named by `crate::…` paths in `text`, comments left out. `use crate::{a, b::c}`
/// names `a` and `b`.
fn crate_paths(text: &str) -> std::collections::BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `some_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item = true,
                    c if item && (c.is_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[j..]));
                        item = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

type Graph = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// Module → the other modules its files use.
fn module_graph(root: &Path) -> Graph {
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let deps = graph.entry(module.clone()).or_default();
        for d in crate_paths(&text) {
            if d != module && d != "self" {
                deps.insert(d);
            }
        }
    }
    graph
}

/// One dependency cycle of `graph`, if it has any (depth-first search).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Every edge of `graph` outside [`ALLOWED`], as `from → to` lines.
fn forbidden(graph: &Graph) -> Vec<String> {
    let allowed: std::collections::BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut out = Vec::new();
    for (from, deps) in graph {
        match allowed.get(from.as_str()) {
            None => out.push(format!(
                "{from}: a module not in ALLOWED (tests/it/tidy.rs)"
            )),
            Some(ok) => out.extend(
                deps.iter()
                    .filter(|d| !ok.contains(&d.as_str()))
                    .map(|d| format!("{from} → {d}")),
            ),
        }
    }
    out
}

#[test]
fn modules_depend_one_way() {
    let graph = module_graph(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(graph.len() > 15, "found only {} modules", graph.len());
    assert!(
        graph["cli"].contains("service") && graph["engine"].contains("plan"),
        "the scan sees no edges: {graph:?}"
    );
    let bad = forbidden(&graph);
    assert!(
        bad.is_empty(),
        "dependencies outside the allowed list:\n{}",
        bad.join("\n")
    );
    assert_eq!(
        find_cycle(&graph),
        None,
        "a dependency cycle between modules"
    );
}

#[test]
fn the_allowed_list_itself_has_no_cycle() {
    let graph: Graph = ALLOWED
        .iter()
        .map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect()))
        .collect();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn the_checks_catch_a_cycle_and_a_forbidden_edge() {
    let text = "use crate::{model::AppName, plan};\nlet x = crate::engine::now(); // crate::cli\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["engine", "model", "plan"]);
    let mut graph: Graph = [
        ("model".to_owned(), Default::default()),
        ("plan".to_owned(), ["model".to_owned()].into()),
    ]
    .into();
    assert_eq!(find_cycle(&graph), None);
    assert!(forbidden(&graph).is_empty());
    graph.get_mut("model").unwrap().insert("plan".to_owned());
    assert_eq!(
        find_cycle(&graph),
        Some(vec![
            "model".to_owned(),
            "plan".to_owned(),
            "model".to_owned()
        ])
    );
    assert_eq!(forbidden(&graph), ["model → plan"]);
}

/// Prints the module graph the tidy test sees: `cargo test --test it print_module_graph --
/// --ignored --nocapture`.
#[test]
#[ignore = "prints the module graph; run on demand"]
fn print_module_graph() {
    let graph = module_graph(Path::new(env!("CARGO_MANIFEST_DIR")));
    let edges: usize = graph.values().map(|d| d.len()).sum();
    for (m, deps) in &graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("{m} -> {}", deps.join(" "));
    }
    println!(
        "modules {}, edges {edges}, cycle: {:?}",
        graph.len(),
        find_cycle(&graph)
    );
}

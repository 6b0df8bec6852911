//! The stage graph: a petgraph DAG built from the stage specs, checked for duplicate ids,
//! dangling inputs and cycles, with topological order, ancestor selection and rendering.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use petgraph::Direction;

use super::spec::StageSpec;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("stage id {0} is declared twice")]
    Duplicate(String),
    #[error("stage {stage} reads {input}, but no stage {missing} exists")]
    Dangling { stage: String, input: String, missing: String },
    #[error("stage {stage} reads {input}, but stage {upstream} declares no output {file}")]
    MissingOutput { stage: String, input: String, upstream: String, file: String },
    #[error("the stage graph has a cycle through: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("unknown stage id {id}; known stages: {known}")]
    UnknownStage { id: String, known: String },
    #[error("no stage id matches {pattern}; known stages: {known}")]
    NoMatch { pattern: String, known: String },
}

/// Output format of [`Graph::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

pub struct Graph {
    stages: Vec<StageSpec>,
    dag: DiGraph<usize, ()>,
    index: HashMap<String, NodeIndex>,
    /// Stage indices in dependency order (ties broken by declaration order).
    order: Vec<usize>,
}

impl Graph {
    pub fn new(stages: Vec<StageSpec>) -> Result<Self, GraphError> {
        let mut dag = DiGraph::new();
        let mut index = HashMap::new();
        for (i, s) in stages.iter().enumerate() {
            if index.insert(s.id.clone(), dag.add_node(i)).is_some() {
                return Err(GraphError::Duplicate(s.id.clone()));
            }
        }
        for s in &stages {
            for input in &s.inputs {
                let Some(&from) = index.get(&input.stage) else {
                    return Err(GraphError::Dangling { stage: s.id.clone(), input: input.key(), missing: input.stage.clone() });
                };
                let upstream = &stages[dag[from]];
                if !upstream.outputs.contains(&input.file) {
                    return Err(GraphError::MissingOutput {
                        stage: s.id.clone(),
                        input: input.key(),
                        upstream: upstream.id.clone(),
                        file: input.file.clone(),
                    });
                }
                let to = index[&s.id];
                if dag.find_edge(from, to).is_none() {
                    dag.add_edge(from, to, ());
                }
            }
        }
        let topo = toposort(&dag, None).map_err(|_| {
            let mut cycle: Vec<String> = tarjan_scc(&dag)
                .into_iter()
                .find(|scc| scc.len() > 1 || scc.iter().any(|&n| dag.find_edge(n, n).is_some()))
                .unwrap_or_default()
                .into_iter()
                .map(|n| stages[dag[n]].id.clone())
                .collect();
            cycle.sort();
            GraphError::Cycle(cycle)
        })?;
        // Stable order: a stage comes after its inputs, otherwise in declaration order.
        let mut rank = vec![0usize; stages.len()];
        for n in &topo {
            let r = dag.neighbors_directed(*n, Direction::Incoming).map(|p| rank[dag[p]] + 1).max().unwrap_or(0);
            rank[dag[*n]] = r;
        }
        let mut order: Vec<usize> = (0..stages.len()).collect();
        order.sort_by_key(|&i| (rank[i], i));
        Ok(Self { stages, dag, index, order })
    }

    pub fn stages(&self) -> &[StageSpec] {
        &self.stages
    }

    /// Stages in dependency order.
    pub fn ordered(&self) -> impl Iterator<Item = &StageSpec> {
        self.order.iter().map(|&i| &self.stages[i])
    }

    pub fn get(&self, id: &str) -> Option<&StageSpec> {
        self.index.get(id).map(|&n| &self.stages[self.dag[n]])
    }

    /// Checks that every id names a stage.
    pub fn check_ids<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Result<(), GraphError> {
        for id in ids {
            if !self.index.contains_key(id) {
                let known = self.ordered().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ");
                return Err(GraphError::UnknownStage { id: id.clone(), known });
            }
        }
        Ok(())
    }

    /// Stage ids from ids and glob patterns (`*` any run of characters, `?` one), each
    /// matching stage once, in pipeline order. A pattern that matches nothing is an error, like
    /// an unknown id.
    pub fn expand(&self, patterns: &[String]) -> Result<Vec<String>, GraphError> {
        let mut out: Vec<String> = Vec::new();
        for pattern in patterns {
            if !pattern.contains(['*', '?']) {
                self.check_ids([pattern])?;
                if !out.contains(pattern) {
                    out.push(pattern.clone());
                }
                continue;
            }
            let matched: Vec<&str> = self.ordered().map(|s| s.id.as_str()).filter(|id| glob_match(pattern, id)).collect();
            if matched.is_empty() {
                let known = self.ordered().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ");
                return Err(GraphError::NoMatch { pattern: pattern.clone(), known });
            }
            for id in matched {
                if !out.iter().any(|o| o == id) {
                    out.push(id.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// The given stages and all their ancestors.
    pub fn with_ancestors(&self, ids: &[String]) -> Result<BTreeSet<String>, GraphError> {
        self.check_ids(ids)?;
        let reversed = Reversed(&self.dag);
        let mut out = BTreeSet::new();
        for id in ids {
            let mut dfs = Dfs::new(reversed, self.index[id]);
            while let Some(n) = dfs.next(reversed) {
                out.insert(self.stages[self.dag[n]].id.clone());
            }
        }
        Ok(out)
    }

    pub fn render(&self, format: DagFormat) -> String {
        let mut out = String::new();
        let edges = || self.ordered().flat_map(|s| s.upstream().into_iter().map(move |u| (u.to_owned(), s.id.clone())));
        match format {
            DagFormat::Text => {
                for s in self.ordered() {
                    let ups = s.upstream();
                    if ups.is_empty() {
                        let _ = writeln!(out, "{} [{}]", s.id, s.kind.kind());
                    } else {
                        let _ = writeln!(out, "{} [{}] <- {}", s.id, s.kind.kind(), ups.join(", "));
                    }
                }
            }
            DagFormat::Dot => {
                out.push_str("digraph pipeline {\n  rankdir=LR;\n  node [shape=box];\n");
                for s in self.ordered() {
                    let _ = writeln!(out, "  \"{}\" [label=\"{}\\n({})\"];", s.id, s.id, s.kind.kind());
                }
                for (a, b) in edges() {
                    let _ = writeln!(out, "  \"{a}\" -> \"{b}\";");
                }
                out.push_str("}\n");
            }
            DagFormat::Mermaid => {
                out.push_str("flowchart LR\n");
                let node = |id: &str| id.replace('-', "_");
                for s in self.ordered() {
                    let _ = writeln!(out, "  {}[\"{}\"]", node(&s.id), s.id);
                }
                for (a, b) in edges() {
                    let _ = writeln!(out, "  {} --> {}", node(&a), node(&b));
                }
            }
        }
        out
    }
}

/// Shell-style matching of a whole id: `*` any run of characters (also none), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last star swallow one more character.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_ids() {
        assert!(glob_match("kmeans-*-conv-*", "kmeans-mnist-conv-s42-3"));
        assert!(glob_match("*-s42-?", "kmeans-mnist-conv-s42-3"));
        assert!(!glob_match("*-s42-?", "kmeans-mnist-conv-s42-13"));
        assert!(glob_match("train-*-s4*", "train-mnist-simple-s42"));
        assert!(!glob_match("train-*", "pca-mnist-simple-s42"));
        assert!(glob_match("*", "") && glob_match("a*b*c", "aXbYbc") && !glob_match("a*b*c", "aXbYb"));
    }
    use crate::spec::{StageContext, StageKind, StageReport};
    use std::sync::Arc;

    struct Nop;
    impl StageKind for Nop {
        fn kind(&self) -> &'static str {
            "nop"
        }
        fn version(&self) -> u32 {
            1
        }
        fn run(&self, _: &StageContext<'_>) -> anyhow::Result<StageReport> {
            Ok(StageReport::default())
        }
    }

    fn stage(id: &str, inputs: &[&str]) -> StageSpec {
        let mut s = StageSpec::new(id, Arc::new(Nop)).outputs(&["out"]);
        for i in inputs {
            s = s.input(i, "out");
        }
        s
    }

    #[test]
    fn orders_by_dependencies() {
        let g = Graph::new(vec![stage("c", &["b"]), stage("a", &[]), stage("b", &["a"])]).unwrap();
        let ids: Vec<_> = g.ordered().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let anc = g.with_ancestors(&["b".into()]).unwrap();
        assert_eq!(anc.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn cycle_names_its_stages() {
        let err = Graph::new(vec![stage("a", &["c"]), stage("b", &["a"]), stage("c", &["b"]), stage("d", &[])]).err().unwrap();
        assert_eq!(err, GraphError::Cycle(vec!["a".into(), "b".into(), "c".into()]));
        assert!(err.to_string().contains("a -> b -> c"));
    }

    #[test]
    fn dangling_input_is_an_error() {
        let err = Graph::new(vec![stage("a", &["ghost"])]).err().unwrap();
        assert!(err.to_string().contains("stage a reads ghost/out, but no stage ghost exists"), "{err}");
        let mut s = stage("b", &[]);
        s.inputs.push(crate::spec::InputRef::new("a", "nope"));
        let err = Graph::new(vec![stage("a", &[]), s]).err().unwrap();
        assert!(err.to_string().contains("declares no output nope"), "{err}");
    }

    #[test]
    fn unknown_ids_are_reported() {
        let g = Graph::new(vec![stage("a", &[])]).unwrap();
        let err = g.with_ancestors(&["zzz".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown stage id zzz"), "{err}");
    }

    #[test]
    fn renders_all_formats() {
        let g = Graph::new(vec![stage("a-1", &[]), stage("b", &["a-1"])]).unwrap();
        assert!(g.render(DagFormat::Text).contains("b [nop] <- a-1"));
        assert!(g.render(DagFormat::Dot).contains("\"a-1\" -> \"b\";"));
        assert!(g.render(DagFormat::Mermaid).contains("a_1 --> b"));
    }
}

//! Maps field paths (`routes[2].upstream`) to their line and column in the YAML source.
//!
//! Semantic checks run on typed structs and speak in field paths; people want `file:line:col`.
//! One pass over the parser's events records where every key and value starts, so every
//! error, from serde or from `compile`, can point at the exact place in the file.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

/// Where a field's key and its value start.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Option<Position>,
    value: Position,
}

/// Field path → position, built from one parse of the source.
#[derive(Debug, Default)]
pub struct PositionIndex {
    entries: HashMap<String, Entry>,
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, Position)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

impl PositionIndex {
    /// Indexes `source`. A syntax error simply ends the index early: the YAML deserializer
    /// reports syntax errors itself, with their own position.
    pub fn build(source: &str) -> Self {
        let mut index = PositionIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(source);
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = Position {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            match event {
                Event::Scalar(text, ..) => {
                    if let Some(Frame::Map { pending_key, .. }) = stack.last_mut() {
                        if pending_key.is_none() {
                            *pending_key = Some((text.into_owned(), pos));
                            continue;
                        }
                    }
                    index.record_value(&mut stack, pos);
                }
                Event::Alias(_) => {
                    index.record_value(&mut stack, pos);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = index.record_value(&mut stack, pos).unwrap_or_default();
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map {
                            path,
                            pending_key: None,
                        },
                        _ => Frame::Seq { path, next: 0 },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        index
    }

    /// Records a value node at `pos` under the current container; returns its path.
    fn record_value(&mut self, stack: &mut [Frame], pos: Position) -> Option<String> {
        let (path, key) = match stack.last_mut() {
            None => (String::new(), None),
            Some(Frame::Map { path, pending_key }) => {
                // A complex (non-scalar) key is not something routes.yaml uses; index its value
                // under an empty name rather than guessing.
                let (name, key_pos) = pending_key.take()?;
                (join_key(path, &name), Some(key_pos))
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                (p, None)
            }
        };
        self.entries
            .entry(path.clone())
            .or_insert(Entry { key, value: pos });
        Some(path)
    }

    /// Where the value at `path` starts, or the nearest indexed ancestor.
    pub fn value(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.get(p) {
                return Some(e.value);
            }
            p = parent_path(p)?;
        }
    }

    /// The field path whose value starts at `pos`, if any (to name the field of a YAML type
    /// error, which only knows its position).
    pub fn path_at(&self, pos: Position) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.value == pos)
            .map(|(p, _)| p.as_str())
            .max_by_key(|p| p.len())
    }

    /// Where the key of `path` starts (for "unknown key" errors), else its value.
    pub fn key(&self, path: &str) -> Option<Position> {
        match self.entries.get(path) {
            Some(e) => Some(e.key.unwrap_or(e.value)),
            None => self.value(path),
        }
    }
}

/// `routes[2]` + `upstream` → `routes[2].upstream`; top-level keys have no leading dot.
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_keys_and_sequence_items() {
        let src = "listen: 127.0.0.1:8080\nroutes:\n  - id: a\n    path: /x\n  - id: b\n    upstream: http://u\n";
        let idx = PositionIndex::build(src);
        assert_eq!(idx.value("listen"), Some(Position { line: 1, col: 9 }));
        assert_eq!(
            idx.key("routes[1].upstream"),
            Some(Position { line: 6, col: 5 })
        );
        assert_eq!(
            idx.value("routes[1].upstream"),
            Some(Position { line: 6, col: 15 })
        );
        assert_eq!(idx.value("routes[0]"), Some(Position { line: 3, col: 5 }));
        // Unknown paths fall back to their nearest ancestor.
        assert_eq!(
            idx.value("routes[1].methods"),
            Some(Position { line: 5, col: 5 })
        );
    }
}

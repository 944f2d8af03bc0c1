//! Topic names and MQTT-style topic filters (`+` one level, `#` the rest), and
//! the trie that finds every filter matching a topic without scanning them all.

use std::collections::HashMap;
use std::fmt;

/// Longest topic or filter accepted, in bytes (the MQTT limit).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a topic filter must not be empty")]
    Empty,
    #[error("a topic filter must be at most {MAX_TOPIC_LEN} bytes")]
    TooLong,
    #[error("'#' must be the last level of a topic filter, alone")]
    MisplacedHash,
    #[error("'+' must stand alone in its level")]
    MisplacedPlus,
    #[error("a topic filter must not contain NUL")]
    Nul,
}

/// A validated subscription filter such as `signs/+` or `messages/#`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicFilter(String);

impl TopicFilter {
    pub fn parse(filter: &str) -> Result<Self, FilterError> {
        if filter.is_empty() {
            return Err(FilterError::Empty);
        }
        if filter.len() > MAX_TOPIC_LEN {
            return Err(FilterError::TooLong);
        }
        if filter.contains('\0') {
            return Err(FilterError::Nul);
        }
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(FilterError::MisplacedHash);
            }
            if level.contains('+') && level != "+" {
                return Err(FilterError::MisplacedPlus);
            }
        }
        Ok(Self(filter.to_owned()))
    }

    /// The filter matching exactly one topic.
    pub fn exact(table: &str, id: &str) -> Self {
        Self(format!("{table}/{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The literal first level, if the filter has one: lets a scan be limited to one table.
    pub fn literal_table(&self) -> Option<&str> {
        let first = self.0.split('/').next()?;
        (first != "+" && first != "#").then_some(first)
    }

    /// Whether `topic` matches this filter. Topics starting with `$` are never
    /// matched by a wildcard in the first level.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && (self.0.starts_with('+') || self.0.starts_with('#')) {
            return false;
        }
        let mut filter = self.0.split('/');
        let mut levels = topic.split('/');
        loop {
            match (filter.next(), levels.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Maps topic filters to the subscribers holding them; `matches` walks only the
/// branches a topic can reach.
#[derive(Debug)]
pub struct FilterTrie<S> {
    root: Node<S>,
}

#[derive(Debug)]
struct Node<S> {
    children: HashMap<String, Node<S>>,
    /// Subscribers whose filter ends exactly here.
    here: Vec<S>,
    /// Subscribers whose filter continues with `#` here.
    rest: Vec<S>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            here: Vec::new(),
            rest: Vec::new(),
        }
    }
}

impl<S> Default for FilterTrie<S> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

impl<S: Copy + PartialEq> FilterTrie<S> {
    pub fn insert(&mut self, filter: &TopicFilter, sub: S) {
        let mut node = &mut self.root;
        for level in filter.as_str().split('/') {
            if level == "#" {
                if !node.rest.contains(&sub) {
                    node.rest.push(sub);
                }
                return;
            }
            node = node.children.entry(level.to_owned()).or_default();
        }
        if !node.here.contains(&sub) {
            node.here.push(sub);
        }
    }

    pub fn remove(&mut self, filter: &TopicFilter, sub: S) {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        remove_in(&mut self.root, &levels, sub);
    }

    /// Every subscriber with a filter matching `topic`; a subscriber may appear
    /// more than once when several of its filters match.
    pub fn matches(&self, topic: &str, out: &mut Vec<S>) {
        self.matches_levels(topic.split('/'), topic.starts_with('$'), out);
    }

    /// [`FilterTrie::matches`] for the topic `{first}/{rest}` (a change's
    /// `{table}/{id}`), without building that string: the bus asks this for
    /// every change.
    pub fn matches_parts(&self, first: &str, rest: &str, out: &mut Vec<S>) {
        let levels = std::iter::once(first).chain(rest.split('/'));
        self.matches_levels(levels, first.starts_with('$'), out);
    }

    /// The levels of a topic are gathered on the stack when there are few
    /// (topics are short), in a Vec otherwise.
    fn matches_levels<'t>(
        &self,
        levels: impl Iterator<Item = &'t str> + Clone,
        dollar: bool,
        out: &mut Vec<S>,
    ) {
        const ON_STACK: usize = 8;
        let mut stack = [""; ON_STACK];
        let mut count = 0;
        for level in levels.clone() {
            let Some(slot) = stack.get_mut(count) else {
                let levels: Vec<&str> = levels.collect();
                collect(&self.root, &levels, dollar, out);
                return;
            };
            *slot = level;
            count += 1;
        }
        collect(
            &self.root,
            stack.get(..count).unwrap_or_default(),
            dollar,
            out,
        );
    }
}

fn remove_in<S: PartialEq>(node: &mut Node<S>, levels: &[&str], sub: S) -> bool {
    match levels.split_first() {
        None => node.here.retain(|s| *s != sub),
        Some((&"#", _)) => node.rest.retain(|s| *s != sub),
        Some((level, tail)) => {
            if let Some(child) = node.children.get_mut(*level)
                && remove_in(child, tail, sub)
            {
                node.children.remove(*level);
            }
        }
    }
    node.here.is_empty() && node.rest.is_empty() && node.children.is_empty()
}

fn collect<S: Copy>(node: &Node<S>, levels: &[&str], first_is_dollar: bool, out: &mut Vec<S>) {
    // `#` also matches the parent level itself ("a/#" matches "a").
    if !first_is_dollar {
        out.extend_from_slice(&node.rest);
    }
    let Some((level, tail)) = levels.split_first() else {
        out.extend_from_slice(&node.here);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        collect(child, tail, false, out);
    }
    if !first_is_dollar && let Some(child) = node.children.get("+") {
        collect(child, tail, false, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    #[test]
    fn filters_are_validated() {
        assert!(TopicFilter::parse("a/#").is_ok());
        assert!(TopicFilter::parse("+/b/+").is_ok());
        assert_eq!(TopicFilter::parse(""), Err(FilterError::Empty));
        assert_eq!(TopicFilter::parse("a/#/b"), Err(FilterError::MisplacedHash));
        assert_eq!(TopicFilter::parse("a/b#"), Err(FilterError::MisplacedHash));
        assert_eq!(TopicFilter::parse("a/b+"), Err(FilterError::MisplacedPlus));
    }

    #[test]
    fn matching_follows_mqtt_rules() {
        assert!(f("signs/#").matches("signs/lobby"));
        assert!(f("signs/#").matches("signs"));
        assert!(f("signs/+").matches("signs/lobby"));
        assert!(!f("signs/+").matches("signs/lobby/x"));
        assert!(!f("signs/+").matches("messages/a"));
        assert!(f("#").matches("a/b/c"));
        assert!(!f("#").matches("$SYS/uptime"));
        assert!(!f("+/uptime").matches("$SYS/uptime"));
        assert!(f("$SYS/#").matches("$SYS/uptime"));
    }

    #[test]
    fn trie_agrees_with_filter_matching() {
        let filters = [
            "#", "+", "a", "a/b", "a/+", "a/#", "+/b", "+/+", "a/b/c", "$SYS/#", "+/#",
        ];
        let topics = [
            "a",
            "a/b",
            "a/c",
            "b/b",
            "a/b/c",
            "$SYS/x",
            "x/y/z",
            "a/",
            "a/b/c/d/e/f/g/h/i/j",
        ];
        let mut trie = FilterTrie::default();
        for (i, filter) in filters.iter().enumerate() {
            trie.insert(&f(filter), i);
        }
        for topic in topics {
            let mut got = Vec::new();
            trie.matches(topic, &mut got);
            got.sort_unstable();
            let want: Vec<usize> = (0..filters.len())
                .filter(|&i| f(filters[i]).matches(topic))
                .collect();
            assert_eq!(got, want, "topic {topic}");
            if let Some((first, rest)) = topic.split_once('/') {
                let mut parts = Vec::new();
                trie.matches_parts(first, rest, &mut parts);
                parts.sort_unstable();
                assert_eq!(parts, want, "topic {topic} in two parts");
            }
        }
        for (i, filter) in filters.iter().enumerate() {
            trie.remove(&f(filter), i);
        }
        assert!(trie.root.children.is_empty() && trie.root.rest.is_empty());
    }
}

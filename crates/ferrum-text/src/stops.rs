//! Stop strings over streamed text.
//!
//! Text arrives in pieces (one detokenized token at a time) and a stop string
//! may span pieces. [`StopMatcher`] releases text only once it cannot be the
//! start of a stop string, and at a completed stop cuts the text before it:
//! the stop string itself never reaches the output.

/// What one [`StopMatcher::push`] releases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text safe to show now.
    pub text: String,
    /// Index (in the matcher's list) of the stop string that completed; the
    /// stream is over when set.
    pub stopped: Option<usize>,
}

/// Matches a set of stop strings against a text stream.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released: a suffix that may begin a stop.
    held: String,
    done: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match everywhere).
    pub fn new<S: AsRef<str>>(stops: &[S]) -> Self {
        StopMatcher {
            stops: stops
                .iter()
                .map(|s| s.as_ref().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            held: String::new(),
            done: false,
        }
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Whether a stop string has completed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Text held back because it may begin a stop string.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Feeds `piece`; releases what is safe. After a stop completes, further
    /// pushes release nothing.
    pub fn push(&mut self, piece: &str) -> StopOutcome {
        if self.done {
            return StopOutcome::default();
        }
        if self.stops.is_empty() {
            return StopOutcome {
                text: piece.to_string(),
                stopped: None,
            };
        }
        self.held.push_str(piece);
        // The stop that completes first wins (the smallest end offset; at one
        // end, the longest), as if the text had arrived one character at a
        // time: the result does not depend on how the stream is cut.
        let mut best: Option<(usize, usize, usize)> = None; // (end, start, stop index)
        for (i, s) in self.stops.iter().enumerate() {
            if let Some(at) = self.held.find(s.as_str()) {
                let end = at + s.len();
                if best.is_none_or(|(e, a, _)| end < e || (end == e && at < a)) {
                    best = Some((end, at, i));
                }
            }
        }
        if let Some((_, at, i)) = best {
            let text = self.held[..at].to_string();
            self.held.clear();
            self.done = true;
            return StopOutcome {
                text,
                stopped: Some(i),
            };
        }
        let keep = self.partial_suffix_len();
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutcome {
            text,
            stopped: None,
        }
    }

    /// Ends the stream without a stop: releases the held text.
    pub fn finish(&mut self) -> String {
        if self.done {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of a stop.
    fn partial_suffix_len(&self) -> usize {
        let h = self.held.as_str();
        let mut best = 0;
        for s in &self.stops {
            let max = (s.len() - 1).min(h.len());
            for n in (best + 1..=max).rev() {
                let start = h.len() - n;
                if h.is_char_boundary(start) && s.starts_with(&h[start..]) {
                    best = n;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_stops_passes_through() {
        let mut m = StopMatcher::new::<&str>(&[]);
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn holds_back_a_possible_start() {
        let mut m = StopMatcher::new(&["END"]);
        assert_eq!(m.push("abE").text, "ab");
        assert_eq!(m.held(), "E");
        assert_eq!(m.push("x").text, "Ex");
        assert_eq!(m.push("EN").text, "");
        let out = m.push("Dtail");
        assert_eq!(
            out,
            StopOutcome {
                text: String::new(),
                stopped: Some(0)
            }
        );
        assert!(m.is_done());
        assert_eq!(m.push("more").text, "");
    }
}

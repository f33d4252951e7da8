//! Splits a thinking model's output (Qwen3: `<think>...</think>answer`)
//! into `reasoning_content` and `content`, one streamed piece at a time.
//! A tag split across pieces is held back until it is complete.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before any text: an opening tag may come.
    Start,
    Reasoning,
    /// Right after `</think>`: leading blank lines are dropped.
    AfterClose,
    Content,
}

/// Text of one piece, by destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub content: String,
}

#[derive(Clone, Debug)]
pub struct ReasoningSplitter {
    state: State,
    held: String,
}

impl ReasoningSplitter {
    /// `in_reasoning`: the prompt already opened the thinking block (the
    /// template's generation prompt ends with `<think>`).
    pub fn new(in_reasoning: bool) -> Self {
        ReasoningSplitter { state: if in_reasoning { State::Reasoning } else { State::Start }, held: String::new() }
    }

    pub fn push(&mut self, piece: &str) -> Split {
        let mut out = Split::default();
        self.held.push_str(piece);
        loop {
            match self.state {
                State::Start => {
                    let t = self.held.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Reasoning;
                    } else if !t.is_empty() && OPEN.starts_with(t) {
                        return out; // maybe the start of the tag
                    } else if t.is_empty() {
                        return out;
                    } else {
                        self.state = State::Content;
                    }
                }
                State::Reasoning => {
                    if let Some(at) = self.held.find(CLOSE) {
                        out.reasoning.push_str(&self.held[..at]);
                        self.held = self.held[at + CLOSE.len()..].to_string();
                        self.state = State::AfterClose;
                    } else {
                        let keep = partial_suffix(&self.held, CLOSE);
                        let cut = self.held.len() - keep;
                        out.reasoning.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        return out;
                    }
                }
                State::AfterClose => {
                    let t = self.held.trim_start();
                    if t.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = t.to_string();
                    self.state = State::Content;
                }
                State::Content => {
                    out.content.push_str(&self.held);
                    self.held.clear();
                    return out;
                }
            }
        }
    }

    /// Releases held text at the end of the stream.
    pub fn finish(&mut self) -> Split {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Reasoning => Split { reasoning: held, content: String::new() },
            State::AfterClose => Split::default(),
            State::Start | State::Content => Split { reasoning: String::new(), content: held },
        }
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len().min(s.len() + 1)).rev().find(|&n| s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str], in_reasoning: bool) -> (String, String) {
        let mut s = ReasoningSplitter::new(in_reasoning);
        let (mut r, mut c) = (String::new(), String::new());
        for p in pieces {
            let x = s.push(p);
            r += &x.reasoning;
            c += &x.content;
        }
        let x = s.finish();
        (r + &x.reasoning, c + &x.content)
    }

    #[test]
    fn splits_across_pieces() {
        let want = ("let me think".to_string(), "Answer.".to_string());
        assert_eq!(run(&["<th", "ink>let me ", "think</th", "ink>\n\nAns", "wer."], false), want);
        assert_eq!(run(&["<think>", "let me think", "</think>", "\n\n", "Answer."], false), want);
        assert_eq!(run(&["let me think</think>\n\nAnswer."], true), want);
    }

    #[test]
    fn plain_output_is_content() {
        assert_eq!(run(&["Hello", " world"], false), (String::new(), "Hello world".into()));
        assert_eq!(run(&["<b>", "old"], false), (String::new(), "<b>old".into()));
        assert_eq!(run(&["<thi"], false), (String::new(), "<thi".into()));
        // Unclosed thinking is all reasoning.
        assert_eq!(run(&["<think>hmm", "</thi"], false), ("hmm</thi".into(), String::new()));
    }
}

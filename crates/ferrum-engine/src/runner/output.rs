//! Token ids to the text a client sees: incremental detokenization and stop
//! strings. Plain per-request data, run by the consumer of a
//! `RequestStream` (off the engine thread, overlapping its next step).

use ferrum_text::{Detokenizer, StopMatcher, TextError, Tokenizer};

/// Text released by one token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextDelta {
    pub text: String,
    /// A stop string completed: the request is over (cancel its stream).
    pub stopped: bool,
}

/// One sequence's detokenizer and stop matcher.
#[derive(Clone, Debug)]
pub struct TextOutput {
    detok: Detokenizer,
    stops: StopMatcher,
    text: String,
    stopped: bool,
}

impl TextOutput {
    /// Special tokens are left out of the text when `skip_special`.
    pub fn new<S: AsRef<str>>(tok: &Tokenizer, stops: &[S], skip_special: bool) -> Self {
        TextOutput { detok: Detokenizer::new(tok, skip_special), stops: StopMatcher::new(stops), text: String::new(), stopped: false }
    }

    /// Adds one generated token.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<TextDelta, TextError> {
        if self.stopped {
            return Ok(TextDelta { text: String::new(), stopped: true });
        }
        let piece = self.detok.push(tok, id)?;
        Ok(self.release(&piece))
    }

    /// Ends the stream: releases held-back bytes and text (a stop string may
    /// still complete in them).
    pub fn finish(&mut self) -> TextDelta {
        if self.stopped {
            return TextDelta { text: String::new(), stopped: true };
        }
        let tail = self.detok.finish();
        let mut d = self.release(&tail);
        if !d.stopped {
            let rest = self.stops.finish();
            self.text.push_str(&rest);
            d.text.push_str(&rest);
        }
        d
    }

    fn release(&mut self, piece: &str) -> TextDelta {
        let out = self.stops.push(piece);
        self.text.push_str(&out.text);
        self.stopped = out.stopped.is_some();
        TextDelta { text: out.text, stopped: self.stopped }
    }

    /// Everything released so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}

//! Stop strings over a token stream: stops that span token boundaries end
//! the text right before them and never leak (not even a prefix), and the
//! result does not depend on how the stream is cut.

mod common;

use ferrum_text::{Detokenizer, StopMatcher};
use proptest::prelude::*;

/// Feeds `pieces`; returns (released text, index of the stop hit).
fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
    let mut m = StopMatcher::new(stops);
    let mut out = String::new();
    for p in pieces {
        let o = m.push(p);
        out.push_str(&o.text);
        if o.stopped.is_some() {
            return (out, o.stopped);
        }
    }
    out.push_str(&m.finish());
    (out, None)
}

/// Reference: the text up to the first stop to complete, char by char.
fn reference(stops: &[&str], text: &str) -> String {
    let ends = text.char_indices().map(|(i, c)| i + c.len_utf8());
    for end in ends {
        let head = &text[..end];
        if let Some(s) = stops
            .iter()
            .filter(|s| !s.is_empty() && head.ends_with(**s))
            .max_by_key(|s| s.len())
        {
            return head[..end - s.len()].to_string();
        }
    }
    text.to_string()
}

#[test]
fn stop_split_across_pieces_is_cut_without_leaking() {
    let (out, hit) = run(
        &["</answer>"],
        &["The result", " is 4.</", "ans", "wer>", " trailing"],
    );
    assert_eq!(out, "The result is 4.");
    assert_eq!(hit, Some(0));
    // A prefix that turns out not to be a stop is released later, intact.
    let (out, hit) = run(&["</answer>"], &["a </an", "chor> b"]);
    assert_eq!(out, "a </anchor> b");
    assert_eq!(hit, None);
}

#[test]
fn first_completed_stop_wins() {
    assert_eq!(run(&["abcd", "bc"], &["abcd"]).0, "a");
    assert_eq!(run(&["abcd", "bc"], &["a", "b", "c", "d"]).0, "a");
    assert_eq!(run(&["x", "yx"], &["yx"]), ("".to_string(), Some(1)));
}

#[test]
fn held_text_is_released_at_the_end() {
    let mut m = StopMatcher::new(&["STOP"]);
    assert_eq!(m.push("go ST").text, "go ");
    assert_eq!(m.finish(), "ST");
}

#[test]
fn multibyte_stops_and_text() {
    let (out, hit) = run(&["日本"], &["こんにち", "は日", "本語"]);
    assert_eq!(out, "こんにちは");
    assert_eq!(hit, Some(0));
}

#[test]
fn stops_spanning_real_tokens() {
    let Some(tok) = common::default_tokenizer() else {
        return;
    };
    let text = "def add(a, b):\n    return a + b\n\n\nclass Calculator:\n    pass\n";
    let ids = tok.encode(text, false, false).unwrap();
    for stop in ["b\n\n\nc", "class Calc", "n a +", "ulator:\n"] {
        // The stop must actually span at least two tokens for this test to mean anything.
        let mut d = Detokenizer::new(tok, true);
        let pieces: Vec<String> = ids.iter().map(|&id| d.push(tok, id).unwrap()).collect();
        assert!(
            !pieces.iter().any(|p| p.contains(stop)),
            "{stop:?} lies inside one token: {pieces:?}"
        );
        let mut m = StopMatcher::new(&[stop]);
        let mut out = String::new();
        let mut stopped = false;
        for p in &pieces {
            let o = m.push(p);
            out.push_str(&o.text);
            // Released text is final: it never holds the stop.
            assert!(!out.contains(stop), "{stop:?} leaked: {out:?}");
            if o.stopped.is_some() {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "{stop:?} not found");
        assert_eq!(out, text[..text.find(stop).unwrap()], "{stop:?}");
    }
}

proptest! {
    #[test]
    fn chunking_does_not_matter(
        text in "[abé日]{0,24}",
        stops in prop::collection::vec("[abé日]{1,4}", 0..3),
        cuts in prop::collection::vec(0usize..30, 0..8),
    ) {
        let stops: Vec<&str> = stops.iter().map(String::as_str).collect();
        // Cut `text` at char boundaries near the requested byte offsets.
        let mut offs: Vec<usize> = cuts.iter().map(|&c| c.min(text.len())).filter(|&c| text.is_char_boundary(c)).collect();
        offs.push(0);
        offs.push(text.len());
        offs.sort_unstable();
        offs.dedup();
        let pieces: Vec<&str> = offs.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        let (out, _) = run(&stops, &pieces);
        prop_assert_eq!(out, reference(&stops, &text));
    }
}

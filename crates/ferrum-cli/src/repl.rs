//! The interactive chat of `ferrum run` without a PROMPT: line editing and
//! history (rustyline), multi-turn conversation whose earlier turns stay in
//! the KV cache, `/clear`, `/exit`; Ctrl-C stops the answer being written.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use crate::chat;
use crate::generate::Runner;
use crate::run_output;
use crate::session::Session;
use ferrum_kernels::Backend;

const HELP: &str = "commands: /clear (forget the conversation), /exit or /quit (leave), /help; Ctrl-C stops an answer, Ctrl-D leaves";

fn history_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/ferrum/chat_history.txt"))
}

/// The conversation so far: chat messages, or raw text with `--raw`.
enum Transcript {
    Chat(Vec<serde_json::Value>),
    Raw(String),
}

pub fn run<B: Backend>(runner: &Runner, session: &mut Session<'_, B>) -> Result<()> {
    if !runner.raw {
        runner.template()?;
    }
    let interactive = std::io::stdin().is_terminal();
    let mut rl = DefaultEditor::new()?;
    let history = history_path().filter(|_| interactive);
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    let fresh = || match runner.raw {
        true => Transcript::Raw(String::new()),
        false => Transcript::Chat(
            runner
                .system
                .iter()
                .map(|s| chat::message("system", s))
                .collect(),
        ),
    };
    let mut transcript = fresh();
    eprintln!("ferrum chat — {HELP}");
    let mut stdout = std::io::stdout();
    loop {
        let line = match rl.readline(">>> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let input = line.trim_end_matches(['\r', '\n']);
        if input.trim().is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(input);
        match input.trim() {
            "/exit" | "/quit" | "/bye" => break,
            "/clear" => {
                transcript = fresh();
                session.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            "/help" | "/?" => {
                eprintln!("{HELP}");
                continue;
            }
            c if c.starts_with('/') && !c.contains(' ') => {
                eprintln!("unknown command {c}; {HELP}");
                continue;
            }
            _ => {}
        }
        // The whole conversation, re-rendered; the session prefills only
        // what the cache does not already hold.
        let ids = match &mut transcript {
            Transcript::Chat(msgs) => {
                msgs.push(chat::message("user", input));
                chat::encode_conversation(
                    runner.template()?,
                    &runner.tok,
                    msgs,
                    runner.enable_thinking,
                )
            }
            Transcript::Raw(text) => {
                text.push_str(input);
                chat::encode_raw(&runner.tok, text)
            }
        };
        let ids = match ids {
            Ok(ids) if ids.len() < session.ctx() => ids,
            Ok(ids) => {
                eprintln!("error: the conversation has {} tokens and the context holds {}; /clear to start over (or raise --ctx)", ids.len(), session.ctx());
                undo_input(&mut transcript, input);
                continue;
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                undo_input(&mut transcript, input);
                continue;
            }
        };
        let g = runner.generate(session, &ids, &mut |t| {
            stdout.write_all(t.as_bytes())?;
            stdout.flush()?;
            Ok(())
        });
        writeln!(stdout)?;
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e:#}");
                undo_input(&mut transcript, input);
                session.clear();
                continue;
            }
        };
        match &mut transcript {
            Transcript::Chat(msgs) => msgs.push(chat::message("assistant", &g.text)),
            Transcript::Raw(text) => text.push_str(&g.text),
        }
        if runner.params.logprobs > 0 {
            run_output::print_logprobs(&runner.tok, &g);
        }
        run_output::print_stats(&g);
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = rl.save_history(h);
    }
    Ok(())
}

/// Takes back the user's turn that could not be answered.
fn undo_input(t: &mut Transcript, input: &str) {
    match t {
        Transcript::Chat(msgs) => {
            msgs.pop();
        }
        Transcript::Raw(text) => {
            let n = text.len().saturating_sub(input.len());
            text.truncate(n);
        }
    }
}

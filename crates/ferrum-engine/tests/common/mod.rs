//! Test driver for the scheduler: plays the runner and the sampler, checks
//! every plan against a shadow of the KV cache, and renders plans compactly.
#![allow(dead_code)]

use std::collections::HashMap;

use ferrum_engine::{Request, RequestId, Scheduler, SchedulerConfig, StepPlan, UpdateOutput};

/// `A`, `B`, `C`... for request ids 0, 1, 2...
pub fn name(id: RequestId) -> char {
    char::from(b'A' + id as u8)
}

/// Prompt of request `id`: `1000 * (id + 1) + i`.
pub fn prompt(id: RequestId, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 1000 * (id as u32 + 1) + i)
        .collect()
}

/// The fake sampler: output `j` of request `id` is `1000 * (id + 1) + 500 + j`.
pub fn sample(id: RequestId, output_index: usize) -> u32 {
    1000 * (id as u32 + 1) + 500 + output_index as u32
}

/// `A:40@0[0,1,2]L`: name, tokens, start position, block table, logits flag,
/// `+BC` if siblings B and C fork from this row; then ` pre[B]` if requests
/// were preempted, ` cp[1>2]` for block copies.
pub fn render(plan: &StepPlan) -> String {
    let mut parts: Vec<String> = plan
        .seqs
        .iter()
        .map(|s| {
            let table: Vec<String> = s.block_table.iter().map(|b| b.to_string()).collect();
            let forks: String = s.forks.iter().map(|&f| name(f)).collect();
            format!(
                "{}:{}@{}[{}]{}{}{forks}",
                name(s.id),
                s.tokens.len(),
                s.start_pos,
                table.join(","),
                if s.wants_logits { "L" } else { "" },
                if forks.is_empty() { "" } else { "+" }
            )
        })
        .collect();
    if !plan.preempted.is_empty() {
        let p: String = plan.preempted.iter().map(|&id| name(id)).collect();
        parts.push(format!("pre[{p}]"));
    }
    if !plan.block_copies.is_empty() {
        let c: Vec<String> = plan
            .block_copies
            .iter()
            .map(|c| format!("{}>{}", c.src, c.dst))
            .collect();
        parts.push(format!("cp[{}]", c.join(",")));
    }
    parts.join(" ")
}

/// Order-sensitive hash of a token prefix: what a KV slot "contains".
fn prefix_hash(tokens: &[u32]) -> u64 {
    tokens.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
        (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub struct Driver {
    pub sched: Scheduler,
    pub block_size: usize,
    /// Every token each request has (prompt + sampled), kept by the test.
    pub known: HashMap<RequestId, Vec<u32>>,
    /// Tokens each request received through `update`, in order.
    pub streamed: HashMap<RequestId, Vec<u32>>,
    /// Shadow KV cache: (block, offset) -> hash of the prefix whose last token
    /// was written there.
    pub kv: HashMap<(u32, usize), u64>,
    pub steps: usize,
    /// Requests ended early by the test (abort or stop), not by length.
    pub cut_short: std::collections::HashSet<RequestId>,
}

impl Driver {
    pub fn new(config: SchedulerConfig) -> Self {
        let mut sched = Scheduler::new(config).unwrap();
        sched.set_invariant_checks(true);
        Driver {
            sched,
            block_size: config.block_size,
            known: HashMap::new(),
            streamed: HashMap::new(),
            kv: HashMap::new(),
            steps: 0,
            cut_short: Default::default(),
        }
    }

    pub fn add(&mut self, id: RequestId, prompt_len: usize, max_tokens: usize) {
        let p = prompt(id, prompt_len);
        self.add_tokens(id, p, max_tokens);
    }

    pub fn add_tokens(&mut self, id: RequestId, prompt: Vec<u32>, max_tokens: usize) {
        self.sched
            .add(Request::new(id, prompt.clone(), max_tokens))
            .unwrap();
        self.known.insert(id, prompt);
    }

    /// A group of `ids.len()` sequences of one prompt (`Scheduler::add_n`);
    /// the prompt is `prompt(ids[0], prompt_len)`.
    pub fn add_n(&mut self, ids: &[RequestId], prompt_len: usize, max_tokens: usize) {
        let p = prompt(ids[0], prompt_len);
        self.add_n_tokens(ids, p, max_tokens);
    }

    pub fn add_n_tokens(&mut self, ids: &[RequestId], prompt: Vec<u32>, max_tokens: usize) {
        let reqs = ids
            .iter()
            .map(|&id| Request::new(id, prompt.clone(), max_tokens))
            .collect();
        self.sched.add_n(reqs).unwrap();
        for &id in ids {
            self.known.insert(id, prompt.clone());
        }
    }

    /// Schedules, checks the plan against the shadow, "runs" it and updates
    /// with the fake sampler. Returns the plan and the update output.
    pub fn step(&mut self) -> (StepPlan, UpdateOutput) {
        self.step_abort_mid(None)
    }

    /// Like `step`, but aborts the running request `running[k % len]` (if
    /// any) between `schedule` and `update`, as a client disconnect would.
    pub fn step_abort_mid(&mut self, abort: Option<usize>) -> (StepPlan, UpdateOutput) {
        let plan = self.sched.schedule().unwrap();
        self.steps += 1;
        self.check_plan(&plan);
        if let Some(k) = abort {
            let running = self.sched.running_ids().to_vec();
            if !running.is_empty() {
                let r = self.sched.abort(running[k % running.len()]).unwrap();
                self.cut_short.insert(r.id());
                assert_eq!(
                    r.output(),
                    self.streamed.get(&r.id()).map_or(&[][..], Vec::as_slice)
                );
            }
        }
        // Forking siblings sample from their leader's row.
        let next = |d: &Self, id: RequestId| sample(id, d.streamed.get(&id).map_or(0, Vec::len));
        let mut outputs: Vec<(RequestId, Option<u32>)> = Vec::new();
        for s in &plan.seqs {
            outputs.push((s.id, s.wants_logits.then(|| next(self, s.id))));
            for &f in &s.forks {
                assert!(
                    s.wants_logits,
                    "{} forks from a row without logits",
                    name(s.id)
                );
                outputs.push((f, Some(next(self, f))));
            }
        }
        let out = self.sched.update(&outputs).unwrap();
        for &(id, tok) in &out.tokens {
            self.known.get_mut(&id).unwrap().push(tok);
            self.streamed.entry(id).or_default().push(tok);
        }
        for r in &out.finished {
            assert_eq!(r.output(), self.streamed[&r.id()].as_slice());
            assert_eq!(r.all_tokens(), self.known[&r.id()].as_slice());
        }
        self.sched.check_invariants().unwrap();
        (plan, out)
    }

    /// Steps and returns the rendered plan.
    pub fn step_str(&mut self) -> String {
        render(&self.step().0)
    }

    fn check_plan(&mut self, plan: &StepPlan) {
        let cfg = *self.sched.config();
        let bs = self.block_size;
        assert!(
            plan.num_tokens() <= cfg.max_num_batched_tokens,
            "budget exceeded"
        );
        assert!(plan.seqs.len() <= cfg.max_num_seqs);
        for c in &plan.block_copies {
            for off in 0..bs {
                match self.kv.get(&(c.src, off)).copied() {
                    Some(v) => self.kv.insert((c.dst, off), v),
                    None => self.kv.remove(&(c.dst, off)),
                };
            }
        }
        for s in &plan.seqs {
            let known = &self.known[&s.id];
            let end = s.start_pos + s.tokens.len();
            assert!(!s.tokens.is_empty());
            assert_eq!(
                s.tokens.as_slice(),
                &known[s.start_pos..end],
                "tokens of {}",
                name(s.id)
            );
            assert_eq!(s.wants_logits, end == known.len());
            assert_eq!(
                s.block_table.len(),
                end.div_ceil(bs),
                "table of {}",
                name(s.id)
            );
            // Everything before start_pos must already be in the cache (computed
            // earlier or reused from the prefix cache), with the right prefix.
            for p in 0..s.start_pos {
                let slot = (s.block_table[p / bs], p % bs);
                assert_eq!(
                    self.kv.get(&slot).copied(),
                    Some(prefix_hash(&known[..=p])),
                    "{}: KV of position {p} (block {}) is wrong",
                    name(s.id),
                    slot.0
                );
            }
        }
        // The forward pass writes this step's tokens.
        for s in &plan.seqs {
            let known = &self.known[&s.id];
            for p in s.start_pos..s.start_pos + s.tokens.len() {
                self.kv
                    .insert((s.block_table[p / bs], p % bs), prefix_hash(&known[..=p]));
            }
        }
    }

    /// Steps until every request is done (bounded), returning rendered plans.
    pub fn drain(&mut self, max_steps: usize) -> Vec<String> {
        let mut out = Vec::new();
        while self.sched.has_unfinished() {
            assert!(out.len() < max_steps, "did not drain in {max_steps} steps");
            out.push(self.step_str());
        }
        out
    }

    /// No leaks: nothing running or waiting, every block free or cached.
    pub fn assert_idle(&self) {
        let bm = self.sched.block_manager();
        assert!(!self.sched.has_unfinished());
        assert_eq!(bm.num_seqs(), 0);
        assert_eq!(bm.num_free(), bm.num_blocks());
        bm.check_invariants().unwrap();
    }
}

//! The sampler with exact expectations on constructed logits.

use ferrum_engine::sampler::{
    argmax, raw_logprobs, Sampler, SamplerError, SamplingParams, TokenLogprob,
};
use ferrum_format::hf_config::GenerationConfig;

fn ln(p: f32) -> f32 {
    p.ln()
}

/// Logits whose softmax is exactly `probs` (up to rounding).
fn logits_of(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|&p| ln(p)).collect()
}

fn sampler(p: SamplingParams, vocab: usize) -> Sampler {
    Sampler::new(p, vocab).unwrap()
}

/// Counts of `n` draws, each from a fresh sampler state seeded `seed + i`
/// (fresh so penalties and history play no role).
fn histogram(p: &SamplingParams, logits: &[f32], n: u64) -> Vec<usize> {
    let mut h = vec![0; logits.len()];
    let mut s = sampler(
        SamplingParams {
            seed: Some(7),
            ..p.clone()
        },
        logits.len(),
    );
    for _ in 0..n {
        h[s.sample(logits).unwrap().id as usize] += 1;
    }
    h
}

fn pseudo_random_logits(n: usize, seed: u32) -> Vec<f32> {
    // A small LCG: deterministic, no dependency.
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        })
        .collect()
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let mut s = sampler(SamplingParams::greedy(), 5);
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0, 2.0]).unwrap().id, 1);
    assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY, -5.0]), Some(2));
    assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), None);
}

#[test]
fn top_k_one_equals_greedy() {
    for seed in 0..20u32 {
        let logits = pseudo_random_logits(1000, seed);
        let want = argmax(&logits).unwrap();
        for t in [0.5f32, 1.0, 2.0] {
            let mut s = sampler(
                SamplingParams {
                    temperature: t,
                    top_k: 1,
                    seed: Some(u64::from(seed)),
                    ..Default::default()
                },
                1000,
            );
            assert_eq!(s.sample(&logits).unwrap().id, want);
        }
    }
}

#[test]
fn a_seed_reproduces_and_another_differs() {
    let logits = pseudo_random_logits(500, 3)
        .iter()
        .map(|x| x * 0.2)
        .collect::<Vec<_>>();
    let run = |seed: u64| {
        let mut s = sampler(
            SamplingParams {
                seed: Some(seed),
                ..Default::default()
            },
            500,
        );
        (0..50)
            .map(|_| s.sample(&logits).unwrap().id)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
    // Pinned draws: the counter-based hash and the Gumbel-max draw are part
    // of the contract (same seed, same tokens, on every platform and
    // backend, in every release).
    let probs = logits_of(&[0.25, 0.25, 0.25, 0.25]);
    let mut s = sampler(
        SamplingParams {
            seed: Some(42),
            ..Default::default()
        },
        4,
    );
    let ids: Vec<u32> = (0..12).map(|_| s.sample(&probs).unwrap().id).collect();
    assert_eq!(ids, PINNED_SEED_42);
}

/// Draws of `seed = 42` from a uniform 4-token distribution.
const PINNED_SEED_42: [u32; 12] = [2, 2, 1, 2, 2, 3, 2, 3, 1, 3, 0, 2];

#[test]
fn unseeded_samplers_report_their_seed() {
    let logits = pseudo_random_logits(100, 9);
    let mut a = sampler(SamplingParams::default(), 100);
    let first: Vec<u32> = (0..20).map(|_| a.sample(&logits).unwrap().id).collect();
    let mut b = sampler(
        SamplingParams {
            seed: Some(a.seed()),
            ..Default::default()
        },
        100,
    );
    let again: Vec<u32> = (0..20).map(|_| b.sample(&logits).unwrap().id).collect();
    assert_eq!(first, again);
}

#[test]
fn frequencies_follow_the_softmax() {
    let probs = [0.5f32, 0.3, 0.2];
    let h = histogram(&SamplingParams::default(), &logits_of(&probs), 20_000);
    for (i, &p) in probs.iter().enumerate() {
        let f = h[i] as f32 / 20_000.0;
        assert!((f - p).abs() < 0.015, "token {i}: {f} vs {p} ({h:?})");
    }
    // Temperature 2 flattens: p ∝ sqrt(p).
    let h = histogram(
        &SamplingParams {
            temperature: 2.0,
            ..Default::default()
        },
        &logits_of(&probs),
        20_000,
    );
    let z: f32 = probs.iter().map(|p| p.sqrt()).sum();
    for (i, &p) in probs.iter().enumerate() {
        let f = h[i] as f32 / 20_000.0;
        assert!((f - p.sqrt() / z).abs() < 0.015, "token {i}: {f} ({h:?})");
    }
}

#[test]
fn top_k_top_p_min_p_filter() {
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let hist = |p: SamplingParams| histogram(&p, &logits, 4000);
    // top-k 2: only the two best.
    let h = hist(SamplingParams {
        top_k: 2,
        ..Default::default()
    });
    assert_eq!((h[2], h[3]), (0, 0), "{h:?}");
    assert!(h[0] > 0 && h[1] > 0);
    // top-p 0.75: 0.5 < 0.75 <= 0.8, so tokens 0 and 1.
    let h = hist(SamplingParams {
        top_p: 0.75,
        ..Default::default()
    });
    assert_eq!((h[2], h[3]), (0, 0), "{h:?}");
    assert!(h[1] > 0);
    // top-p 0.5: the first token alone reaches it.
    let h = hist(SamplingParams {
        top_p: 0.5,
        ..Default::default()
    });
    assert_eq!(h, vec![4000, 0, 0, 0]);
    // min-p 0.2: threshold 0.1, drops the 0.05 token only.
    let h = hist(SamplingParams {
        min_p: 0.2,
        ..Default::default()
    });
    assert_eq!(h[3], 0, "{h:?}");
    assert!(h[2] > 0);
    // min-p 0.5: threshold 0.25, keeps 0.5 and 0.3.
    let h = hist(SamplingParams {
        min_p: 0.5,
        ..Default::default()
    });
    assert_eq!((h[2], h[3]), (0, 0), "{h:?}");
    assert!(h[1] > 0);
}

#[test]
fn logit_bias_bans_and_forces() {
    let logits = [1.0, 5.0, 3.0];
    let mut s = sampler(
        SamplingParams {
            logit_bias: vec![(1, f32::NEG_INFINITY)],
            ..SamplingParams::greedy()
        },
        3,
    );
    assert_eq!(s.sample(&logits).unwrap().id, 2);
    let h = histogram(
        &SamplingParams {
            logit_bias: vec![(1, f32::NEG_INFINITY)],
            ..Default::default()
        },
        &logits,
        2000,
    );
    assert_eq!(h[1], 0);
    let mut s = sampler(
        SamplingParams {
            logit_bias: vec![(0, 100.0)],
            ..Default::default()
        },
        3,
    );
    assert_eq!(s.sample(&logits).unwrap().id, 0);
    let mut s = sampler(
        SamplingParams {
            logit_bias: vec![
                (0, f32::NEG_INFINITY),
                (1, f32::NEG_INFINITY),
                (2, f32::NEG_INFINITY),
            ],
            ..Default::default()
        },
        3,
    );
    assert_eq!(s.sample(&logits), Err(SamplerError::NothingToSample));
}

#[test]
fn repetition_penalty_changes_the_argmax() {
    // Positive logits are divided: 2.0 / 1.1 = 1.82 < 1.9.
    let mut s = sampler(
        SamplingParams {
            repetition_penalty: 1.1,
            ..SamplingParams::greedy()
        },
        2,
    );
    s.observe_context(&[0]);
    assert_eq!(s.sample(&[2.0, 1.9]).unwrap().id, 1);
    // Negative logits are multiplied: -1.0 * 1.1 = -1.1 < -1.05.
    let mut s = sampler(
        SamplingParams {
            repetition_penalty: 1.1,
            ..SamplingParams::greedy()
        },
        2,
    );
    s.observe_context(&[0]);
    assert_eq!(s.sample(&[-1.0, -1.05]).unwrap().id, 1);
    // Outside the window (last 2 tokens), token 0 is not penalised.
    let mut s = sampler(
        SamplingParams {
            repetition_penalty: 1.1,
            repeat_last_n: 2,
            ..SamplingParams::greedy()
        },
        3,
    );
    s.observe_context(&[0, 2, 2]);
    assert_eq!(s.sample(&[2.0, 1.9, 0.0]).unwrap().id, 0);
    // Generated tokens enter the window too: 0 is picked, then penalised.
    let mut s = sampler(
        SamplingParams {
            repetition_penalty: 1.1,
            ..SamplingParams::greedy()
        },
        2,
    );
    assert_eq!(s.sample(&[2.0, 1.9]).unwrap().id, 0);
    assert_eq!(s.sample(&[2.0, 1.9]).unwrap().id, 1);
}

#[test]
fn presence_and_frequency_penalties() {
    // Presence: one use costs 0.5, so 1.0 - 0.5 < 0.6 on the second step.
    let mut s = sampler(
        SamplingParams {
            presence_penalty: 0.5,
            ..SamplingParams::greedy()
        },
        2,
    );
    assert_eq!(s.sample(&[1.0, 0.6]).unwrap().id, 0);
    assert_eq!(s.sample(&[1.0, 0.6]).unwrap().id, 1);
    // Frequency: 0.3 per use; token 0 wins twice (1.0, 0.7 > 0.6), then loses (0.4).
    let mut s = sampler(
        SamplingParams {
            frequency_penalty: 0.3,
            ..SamplingParams::greedy()
        },
        2,
    );
    let ids: Vec<u32> = (0..3).map(|_| s.sample(&[1.0, 0.6]).unwrap().id).collect();
    assert_eq!(ids, [0, 0, 1]);
    // Prompt tokens do not count for presence/frequency.
    let mut s = sampler(
        SamplingParams {
            presence_penalty: 2.0,
            ..SamplingParams::greedy()
        },
        2,
    );
    s.observe_context(&[0, 0, 0]);
    assert_eq!(s.sample(&[1.0, 0.6]).unwrap().id, 0);
}

#[test]
fn logprobs_are_the_raw_log_softmax() {
    let logits = logits_of(&[0.5, 0.25, 0.125, 0.125]);
    let mut s = sampler(
        SamplingParams {
            temperature: 3.0,
            repetition_penalty: 2.0,
            logprobs: 3,
            seed: Some(1),
            ..Default::default()
        },
        4,
    );
    let out = s.sample(&logits).unwrap();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
    let want = logits[out.id as usize];
    assert!(close(out.logprob, want), "{} vs {want}", out.logprob);
    let ids: Vec<u32> = out.top.iter().map(|t| t.id).collect();
    assert_eq!(ids, [0, 1, 2], "ties (2 and 3) in order of id");
    assert!(close(out.top[0].logprob, 0.5f32.ln()) && close(out.top[1].logprob, 0.25f32.ln()));
    let (lp, top) = raw_logprobs(&[0.0, 0.0], 1, 5);
    assert!(close(lp, 0.5f32.ln()));
    assert_eq!(top.len(), 2);
    assert_eq!(
        top[0],
        TokenLogprob {
            id: 0,
            logprob: top[0].logprob
        }
    );
}

#[test]
fn parameters_are_validated() {
    let bad = |p: SamplingParams| Sampler::new(p, 10).unwrap_err().to_string();
    assert!(bad(SamplingParams {
        temperature: -0.1,
        ..Default::default()
    })
    .contains("temperature"));
    assert!(bad(SamplingParams {
        temperature: f32::NAN,
        ..Default::default()
    })
    .contains("temperature"));
    assert!(bad(SamplingParams {
        top_p: 0.0,
        ..Default::default()
    })
    .contains("top_p"));
    assert!(bad(SamplingParams {
        top_p: 1.5,
        ..Default::default()
    })
    .contains("top_p"));
    assert!(bad(SamplingParams {
        min_p: 2.0,
        ..Default::default()
    })
    .contains("min_p"));
    assert!(bad(SamplingParams {
        repetition_penalty: 0.0,
        ..Default::default()
    })
    .contains("repetition_penalty"));
    assert!(bad(SamplingParams {
        presence_penalty: 3.0,
        ..Default::default()
    })
    .contains("presence_penalty"));
    assert!(bad(SamplingParams {
        logprobs: 21,
        ..Default::default()
    })
    .contains("logprobs"));
    assert!(bad(SamplingParams {
        logit_bias: vec![(10, 1.0)],
        ..Default::default()
    })
    .contains("token 10"));
    assert!(bad(SamplingParams {
        logit_bias: vec![(1, f32::NAN)],
        ..Default::default()
    })
    .contains("NaN"));
    let mut s = sampler(SamplingParams::default(), 10);
    assert_eq!(
        s.sample(&[0.0; 9]),
        Err(SamplerError::RowLength { got: 9, vocab: 10 })
    );
}

#[test]
fn defaults_from_generation_config() {
    let g: GenerationConfig = r#"{"do_sample": true, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}"#.parse().unwrap();
    let p = SamplingParams::from_generation_config(&g);
    assert_eq!(
        (
            p.temperature,
            p.top_k,
            p.top_p,
            p.min_p,
            p.repetition_penalty,
            p.repeat_last_n
        ),
        (0.7, 20, 0.8, 0.0, 1.05, 0)
    );
    // transformers samples only with do_sample = true; its defaults fill the gaps.
    let g: GenerationConfig = r#"{"temperature": 0.7}"#.parse().unwrap();
    assert_eq!(SamplingParams::from_generation_config(&g).temperature, 0.0);
    let g: GenerationConfig = r#"{"do_sample": true}"#.parse().unwrap();
    let p = SamplingParams::from_generation_config(&g);
    assert_eq!((p.temperature, p.top_k, p.top_p), (1.0, 50, 1.0));
}

/// A plain-greedy sampler accepts the backend's choice with the same id and
/// (to f32 rounding) the same log-probability as sampling the row itself.
#[test]
fn backend_choice_equals_greedy_sampling() {
    let row: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 997) as f32 / 97.0 - 3.0).collect();
    let mut a = Sampler::new(SamplingParams::greedy(), row.len()).unwrap();
    let mut b = Sampler::new(SamplingParams::greedy(), row.len()).unwrap();
    assert!(a.plain_greedy());
    let s = a.sample(&row).unwrap();
    let p = b.accept(&ferrum_kernels::RowArgmax::of(&row)).unwrap();
    assert_eq!(s.id, p.id);
    assert!((s.logprob - p.logprob).abs() < 1e-5, "{} vs {}", s.logprob, p.logprob);
    let with_logprobs = Sampler::new(SamplingParams { logprobs: 2, ..SamplingParams::greedy() }, row.len()).unwrap();
    assert!(!with_logprobs.plain_greedy());
    let empty = b.accept(&ferrum_kernels::RowArgmax { id: None, logit: f32::NEG_INFINITY, lse: f32::NEG_INFINITY });
    assert!(empty.is_err());
}

//! Rotary position embedding of one head.

use crate::backend::{Rope, RopeStyle};

/// Rotate `head` (`[head_dim]`) to position `pos`.
pub fn apply(head: &mut [f32], pos: usize, rope: &Rope) {
    let half = rope.inv_freq.len();
    let p = pos as f32;
    for (i, &f) in rope.inv_freq.iter().enumerate() {
        let (sin, cos) = (p * f).sin_cos();
        let (a, b) = match rope.style {
            RopeStyle::NeoX => (i, i + half),
            RopeStyle::GptJ => (2 * i, 2 * i + 1),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

//! L-BFGS, the linear probe's optimiser: the problem is a few thousand parameters, too small to be
//! worth a dependency.

/// Minimises `f` (which writes its gradient into the second argument) from `x` with L-BFGS
/// (memory 10, Armijo backtracking), for at most `max_iter` iterations or until the largest
/// gradient entry is at most `gtol`.
pub(super) fn lbfgs(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x: &mut [f64],
    max_iter: usize,
    gtol: f64,
) {
    const MEMORY: usize = 10;
    let len = x.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut g = vec![0f64; len];
    let mut fx = f(x, &mut g);
    let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let mut x_new = vec![0f64; len];
    let mut g_new = vec![0f64; len];
    for _ in 0..max_iter {
        if g.iter().fold(0f64, |m, v| m.max(v.abs())) <= gtol {
            break;
        }
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alpha = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alpha.push(a);
        }
        let gamma = match hist.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            // No curvature yet: a first step of unit length.
            None => 1.0 / dot(&g, &g).sqrt(),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in hist.iter().zip(alpha.iter().rev()) {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - beta) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (rounding): restart from steepest descent.
            hist.clear();
            let scale = 1.0 / dot(&g, &g).sqrt();
            dir = g.iter().map(|v| -v * scale).collect();
            slope = dot(&g, &dir);
        }
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            for ((o, xi), di) in x_new.iter_mut().zip(x.iter()).zip(&dir) {
                *o = xi + t * di;
            }
            let f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * t * slope {
                accepted = Some(f_new);
                break;
            }
            t *= 0.5;
        }
        let Some(f_new) = accepted else { break };
        let s: Vec<f64> = x_new.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
            if hist.len() == MEMORY {
                hist.pop_front();
            }
            hist.push_back((s, y, 1.0 / sy));
        }
        let decrease = fx - f_new;
        x.copy_from_slice(&x_new);
        g.copy_from_slice(&g_new);
        fx = f_new;
        if decrease <= 1e-15 * fx.abs().max(1.0) {
            break;
        }
    }
}

//! The core engine's correctness: gradients of every mode against backprop and finite
//! differences, the adjoint's error rates in depth, tied weights and batch-norm bookkeeping.

use burn::tensor::Tensor;
use resnet_ode::device::{to_vec, Placement, Precision};
use resnet_ode::family::Family;
use resnet_ode::grad::GradMode;
use resnet_ode::metrics::gradient_error;
use resnet_ode::norm::BnMode;
use resnet_ode::params::{flat_grads, perturb};
use resnet_ode::residual::*;
use resnet_ode::rng::Rng;
use resnet_ode::scheme::Scheme;
use resnet_ode::stack::Stack;

fn f64p() -> Placement {
    Placement::flex(Precision::F64)
}

fn input<const D: usize>(p: &Placement, shape: [usize; D], seed: u64) -> Tensor<D> {
    let n = shape.iter().product();
    p.tensor(Rng::new(seed).normals(n), shape)
}

fn mean_sq<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    x.square().mean()
}

fn mlp_stack(p: &Placement, depth: usize, family: Family, scheme: Scheme, seed: u64) -> Stack<Mlp> {
    let cfg = MlpConfig {
        dim: 16,
        hidden: 16,
        activation: Activation::Tanh,
    };
    let mut rng = Rng::new(seed);
    let fs = family.functions(depth, &mut rng, |r| cfg.init(p, r));
    Stack::new(fs, scheme).unwrap()
}

fn conv_stack(
    p: &Placement,
    depth: usize,
    family: Family,
    scheme: Scheme,
    seed: u64,
) -> Stack<ConvBlock> {
    // zero_init off: the blocks must not be identically zero for a meaningful check.
    let cfg = ConvBlockConfig {
        channels: 3,
        zero_init: false,
    };
    let mut rng = Rng::new(seed);
    let fs = family.functions(depth, &mut rng, |r| cfg.init(p, r));
    Stack::new(fs, scheme).unwrap()
}

fn bottleneck_stack(p: &Placement, depth: usize, seed: u64) -> Stack<Bottleneck> {
    let cfg = BottleneckConfig {
        planes: 2,
        zero_init: false,
    };
    let mut rng = Rng::new(seed);
    let fs = Family::Iid.functions(depth, &mut rng, |r| cfg.init(p, r));
    Stack::new(fs, Scheme::Euler).unwrap()
}

fn linear_stack(p: &Placement, depth: usize, seed: u64) -> Stack<LinearResidual> {
    let cfg = LinearConfig { dim: 4 };
    let mut rng = Rng::new(seed);
    let fs = Family::Iid.functions(depth, &mut rng, |r| cfg.init(p, r));
    Stack::new(fs, Scheme::Heun).unwrap()
}

/// Backprop gradients against central differences on a few entries of every tensor. Entries
/// that sit on a ReLU kink (a batch-norm shift of an exactly-zero conv output, say) have no
/// derivative: they are recognised by unequal one-sided differences and skipped, and must be
/// a small minority.
fn check_fd<F, const D: usize>(stack: &Stack<F>, x: Tensor<D>, bn: BnMode)
where
    F: Residual<D> + burn::module::ModuleDisplay,
{
    let g = stack.loss_grads(x.clone(), GradMode::Backprop, bn, mean_sq);
    let grads = flat_grads(stack, &g.params);
    let eps = 1e-6;
    let (mut checked, mut kinks) = (0, 0);
    for (t, (name, gv)) in grads.iter().enumerate() {
        for entry in [0, gv.len() / 2, gv.len() - 1] {
            let loss = |d: f64| {
                let s = perturb(stack, t, entry, d);
                to_vec(&mean_sq(s.forward(x.clone(), bn)))[0]
            };
            let (lm, l0, lp) = (loss(-eps), loss(0.0), loss(eps));
            let (left, right) = ((l0 - lm) / eps, (lp - l0) / eps);
            if (left - right).abs() > 1e-4 * (1.0 + left.abs()) {
                kinks += 1;
                continue;
            }
            let fd = (lp - lm) / (2.0 * eps);
            let tol = 1e-6 * (1.0 + fd.abs());
            assert!(
                (fd - gv[entry]).abs() < tol,
                "{name}[{entry}]: fd {fd} vs backprop {}",
                gv[entry]
            );
            checked += 1;
        }
    }
    assert!(
        kinks * 5 <= checked,
        "{kinks} kinks for {checked} checked entries"
    );
}

#[test]
fn backprop_matches_finite_differences_for_every_residual_kind() {
    let p = f64p();
    check_fd(
        &mlp_stack(&p, 4, Family::Iid, Scheme::Euler, 1),
        input(&p, [5, 16], 2),
        BnMode::Cached,
    );
    check_fd(
        &mlp_stack(&p, 4, Family::Smooth, Scheme::Heun, 1),
        input(&p, [5, 16], 2),
        BnMode::Cached,
    );
    check_fd(
        &linear_stack(&p, 3, 3),
        input(&p, [5, 4], 4),
        BnMode::Cached,
    );
    check_fd(
        &conv_stack(&p, 2, Family::Iid, Scheme::Euler, 5),
        input(&p, [4, 3, 5, 5], 6),
        BnMode::Recompute,
    );
    check_fd(
        &bottleneck_stack(&p, 2, 7),
        input(&p, [4, 8, 4, 4], 8),
        BnMode::Frozen,
    );
}

fn assert_same_grads<F, const D: usize>(
    stack: &Stack<F>,
    x: Tensor<D>,
    mode: GradMode,
    bn: BnMode,
    tol: f64,
) where
    F: Residual<D> + burn::module::ModuleDisplay,
{
    let b = stack.loss_grads(x.clone(), GradMode::Backprop, bn, mean_sq);
    let c = stack.loss_grads(x, mode, bn, mean_sq);
    let err = gradient_error(&flat_grads(stack, &b.params), &flat_grads(stack, &c.params));
    assert!(
        err.relative_error < tol,
        "{mode}: relative gradient error {}",
        err.relative_error
    );
    let gi = (to_vec(&b.input), to_vec(&c.input));
    let e = gradient_error(&[("x0".into(), gi.0)], &[("x0".into(), gi.1)]);
    assert!(
        e.relative_error < tol,
        "{mode}: input gradient error {}",
        e.relative_error
    );
}

#[test]
fn checkpoint_gradients_equal_backprop() {
    let p = f64p();
    for k in [1, 3, 8] {
        let mode = GradMode::Checkpoint(k);
        for scheme in [Scheme::Euler, Scheme::Heun] {
            assert_same_grads(
                &mlp_stack(&p, 7, Family::Iid, scheme, 1),
                input(&p, [6, 16], 2),
                mode,
                BnMode::Cached,
                1e-12,
            );
        }
        for bn in [BnMode::Cached, BnMode::Frozen, BnMode::Recompute] {
            assert_same_grads(
                &conv_stack(&p, 5, Family::Iid, Scheme::Heun, 3),
                input(&p, [4, 3, 5, 5], 4),
                mode,
                bn,
                1e-12,
            );
        }
    }
    // f32 too, to float tolerance.
    let p32 = Placement::flex(Precision::F32);
    assert_same_grads(
        &mlp_stack(&p32, 9, Family::Iid, Scheme::Euler, 1),
        input(&p32, [6, 16], 2),
        GradMode::Checkpoint(4),
        BnMode::Cached,
        1e-5,
    );
}

fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let lx: Vec<f64> = xs.iter().map(|v| v.ln()).collect();
    let ly: Vec<f64> = ys.iter().map(|v| v.ln()).collect();
    let (mx, my) = (
        lx.iter().sum::<f64>() / lx.len() as f64,
        ly.iter().sum::<f64>() / ly.len() as f64,
    );
    let num: f64 = lx.iter().zip(&ly).map(|(a, b)| (a - mx) * (b - my)).sum();
    let den: f64 = lx.iter().map(|a| (a - mx).powi(2)).sum();
    num / den
}

/// Adjoint gradient error and reconstruction error over N = 16…256 on the reference MLP.
fn adjoint_slopes(scheme: Scheme, family: Family) -> (f64, f64) {
    let p = f64p();
    let depths = [16usize, 32, 64, 128, 256];
    let (mut ge, mut re) = (Vec::new(), Vec::new());
    for &n in &depths {
        let stack = mlp_stack(&p, n, family, scheme, 11);
        let x = input(&p, [32, 16], 12);
        let b = stack.loss_grads(x.clone(), GradMode::Backprop, BnMode::Cached, mean_sq);
        let a = stack.loss_grads(x.clone(), GradMode::Adjoint, BnMode::Cached, mean_sq);
        ge.push(
            gradient_error(
                &flat_grads(&stack, &b.params),
                &flat_grads(&stack, &a.params),
            )
            .relative_error,
        );
        re.push(stack.reconstruction_error(x, BnMode::Cached));
    }
    let ns: Vec<f64> = depths.iter().map(|&n| n as f64).collect();
    (slope(&ns, &ge), slope(&ns, &re))
}

#[test]
fn adjoint_error_rates_match_the_reference() {
    for (scheme, family, expected) in [
        (Scheme::Euler, Family::Smooth, -1.0),
        (Scheme::Euler, Family::Iid, -1.5),
        (Scheme::Heun, Family::Smooth, -3.0),
        (Scheme::Heun, Family::Iid, -1.5),
    ] {
        let (g, r) = adjoint_slopes(scheme, family);
        eprintln!("{scheme} {family}: gradient slope {g:.2}, reconstruction slope {r:.2}");
        assert!(
            (g - expected).abs() <= 0.3,
            "{scheme} {family}: gradient-error slope {g:.2}, expected {expected}"
        );
        assert!(
            (r - expected).abs() <= 0.3,
            "{scheme} {family}: reconstruction slope {r:.2}, expected {expected}"
        );
    }
}

#[test]
fn per_step_adjoint_is_more_accurate_than_the_chained_one() {
    let p = f64p();
    let stack = mlp_stack(&p, 32, Family::Iid, Scheme::Euler, 3);
    let x = input(&p, [8, 16], 4);
    let b = flat_grads(
        &stack,
        &stack
            .loss_grads(x.clone(), GradMode::Backprop, BnMode::Cached, mean_sq)
            .params,
    );
    let err = |m| {
        gradient_error(
            &b,
            &flat_grads(
                &stack,
                &stack
                    .loss_grads(x.clone(), m, BnMode::Cached, mean_sq)
                    .params,
            ),
        )
        .relative_error
    };
    let (chained, per_step) = (err(GradMode::Adjoint), err(GradMode::AdjointPerStep));
    assert!(
        per_step < chained && per_step > 0.0,
        "per-step {per_step} vs chained {chained}"
    );
}

#[test]
fn tied_weights_get_the_sum_of_all_their_uses() {
    let p = f64p();
    let cfg = MlpConfig {
        dim: 16,
        hidden: 8,
        activation: Activation::Tanh,
    };
    let f = cfg.init(&p, &mut Rng::new(5));
    let tied = Stack::tied(f, 6, Scheme::Heun).unwrap();
    let untied = tied.untie();
    let x = input(&p, [4, 16], 6);
    // Same function before training.
    let d = to_vec(
        &(tied.forward_eval(x.clone()) - untied.forward_eval(x.clone()))
            .abs()
            .max(),
    );
    assert!(d[0] < 1e-14);
    // Tied gradient = sum over the untied copies' gradients.
    let gt = flat_grads(
        &tied,
        &tied
            .loss_grads(x.clone(), GradMode::Backprop, BnMode::Cached, mean_sq)
            .params,
    );
    let gu = flat_grads(
        &untied,
        &untied
            .loss_grads(x.clone(), GradMode::Backprop, BnMode::Cached, mean_sq)
            .params,
    );
    for (i, (name, g)) in gt.iter().enumerate() {
        let sum: Vec<f64> = (0..g.len())
            .map(|j| gu.iter().skip(i).step_by(gt.len()).map(|(_, v)| v[j]).sum())
            .collect();
        let e = gradient_error(&[(name.clone(), g.clone())], &[(name.clone(), sum)]);
        assert!(e.relative_error < 1e-12, "{name}: {}", e.relative_error);
    }
    // Every gradient mode accumulates tied uses (checkpoint exactly).
    assert_same_grads(
        &tied,
        x.clone(),
        GradMode::Checkpoint(2),
        BnMode::Cached,
        1e-12,
    );
    let a = flat_grads(
        &tied,
        &tied
            .loss_grads(x.clone(), GradMode::Adjoint, BnMode::Cached, mean_sq)
            .params,
    );
    assert!(gradient_error(&gt, &a).relative_error < 0.05);
    // The tied adjoint reuses f(x̃_n) between consecutive steps: the same numbers as the adjoint
    // of the untied copies, which evaluates everything.
    let au = untied.loss_grads(x, GradMode::Adjoint, BnMode::Cached, mean_sq);
    let au = flat_grads(&untied, &au.params);
    for (i, (name, g)) in a.iter().enumerate() {
        let sum: Vec<f64> = (0..g.len())
            .map(|j| au.iter().skip(i).step_by(a.len()).map(|(_, v)| v[j]).sum())
            .collect();
        let e = gradient_error(&[(name.clone(), g.clone())], &[(name.clone(), sum)]);
        assert!(
            e.relative_error < 1e-12,
            "adjoint {name}: {}",
            e.relative_error
        );
    }
}

#[test]
fn stack_composes_with_a_stem_trained_by_autodiff() {
    use burn::optim::GradientsParams;
    use resnet_ode::params::accumulate;
    let p = f64p();
    let stem = LinearConfig { dim: 16 }.init(&p, &mut Rng::new(1));
    let stack = mlp_stack(&p, 8, Family::Smooth, Scheme::Euler, 2);
    let x = input(&p, [4, 16], 3);
    let stem_grad = |mode: GradMode| {
        let mut grads = GradientsParams::new();
        let h = stem.forward(x.clone(), &mut resnet_ode::norm::Norm::eval());
        let run = stack.run(h, mode, BnMode::Cached);
        let mut back = mean_sq(run.output.clone()).backward();
        if let Some(g) = run.output_grad(&back) {
            let input = run.input.clone();
            let g0 = stack.backward(run, g, &mut grads).unwrap();
            // The stem is reached only through the stack input.
            back = resnet_ode::grad::push_to_input(&input, g0);
        }
        accumulate(&mut grads, &mut back, &stem);
        flat_grads(&stem, &grads)
    };
    let (b, c) = (
        stem_grad(GradMode::Backprop),
        stem_grad(GradMode::Checkpoint(3)),
    );
    assert!(gradient_error(&b, &c).relative_error < 1e-12);
    let a = stem_grad(GradMode::Adjoint);
    let e = gradient_error(&b, &a).relative_error;
    assert!(e > 0.0 && e < 0.1, "adjoint stem gradient error {e}");
}

#[test]
fn every_bn_mode_updates_running_statistics_once_per_step() {
    let p = f64p();
    let x = input(&p, [6, 3, 4, 4], 9);
    let running = |s: &Stack<ConvBlock>| {
        s.functions
            .iter()
            .flat_map(|f| [&f.bn1, &f.bn2])
            .flat_map(|b| {
                let mut v = to_vec(&b.running_mean.value_sync());
                v.extend(to_vec(&b.running_var.value_sync()));
                v
            })
            .collect::<Vec<f64>>()
    };
    for bn in [BnMode::Cached, BnMode::Frozen, BnMode::Recompute] {
        // Reference: one ordinary forward.
        let reference = conv_stack(&p, 4, Family::Iid, Scheme::Heun, 21);
        let before = running(&reference);
        let _ = reference.forward(x.clone(), bn);
        let expected = running(&reference);
        if bn == BnMode::Frozen {
            assert_eq!(before, expected, "frozen statistics must not move");
        } else {
            assert_ne!(before, expected);
        }
        for mode in [
            GradMode::Backprop,
            GradMode::Adjoint,
            GradMode::AdjointPerStep,
            GradMode::Checkpoint(2),
        ] {
            let s = conv_stack(&p, 4, Family::Iid, Scheme::Heun, 21);
            let _ = s.loss_grads(x.clone(), mode, bn, mean_sq);
            let got = running(&s);
            let d = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-12, "{bn} {mode}: running statistics differ by {d}");
        }
    }
}

#[test]
fn cached_bn_adjoint_error_vanishes_with_depth() {
    let p = f64p();
    let x = input(&p, [6, 3, 4, 4], 9);
    let errs: Vec<f64> = [8usize, 32]
        .iter()
        .map(|&n| {
            let s = conv_stack(&p, n, Family::Smooth, Scheme::Euler, 4);
            let b = flat_grads(
                &s,
                &s.loss_grads(x.clone(), GradMode::Backprop, BnMode::Cached, mean_sq)
                    .params,
            );
            let a = flat_grads(
                &s,
                &s.loss_grads(x.clone(), GradMode::Adjoint, BnMode::Cached, mean_sq)
                    .params,
            );
            gradient_error(&b, &a).relative_error
        })
        .collect();
    assert!(
        errs[1] < errs[0] / 2.0,
        "cached-BN adjoint error should fall with depth: {errs:?}"
    );
}

#[test]
fn piecewise_copy_repeats_each_function_and_is_independent() {
    let p = f64p();
    let base = mlp_stack(&p, 4, Family::Iid, Scheme::Euler, 9);
    let x = input(&p, [4, 16], 3);
    // At its own depth the copy computes the same map.
    let same = base.piecewise_copy(4).unwrap();
    let d = to_vec(
        &(base.forward_eval(x.clone()) - same.forward_eval(x.clone()))
            .abs()
            .max(),
    );
    assert!(d[0] < 1e-14);
    // At depth 8, function i is function ⌊i/2⌋ of the base, with parameters of its own.
    let fine = base.piecewise_copy(8).unwrap();
    assert_eq!((fine.depth, fine.functions.len()), (8, 8));
    for i in 0..8 {
        let (copy, orig) = (&fine.functions[i], &base.functions[i / 2]);
        for (c, o) in [(&copy.w1, &orig.w1), (&copy.w2, &orig.w2)] {
            assert_eq!(to_vec(&c.val()), to_vec(&o.val()), "function {i}");
            assert_ne!(c.id, o.id, "function {i} shares a parameter with the base");
        }
        assert_eq!(to_vec(&copy.b1.val()), to_vec(&orig.b1.val()));
    }
}

#[test]
fn cached_bn_reversal_keeps_heuns_third_order() {
    // Heun's reversal cancels its leading local error only if each evaluation normalises with
    // the statistics of the forward stage it mirrors: the reconstruction error then falls like
    // N^-3 with smooth weights (N^-2 with any other choice of statistics).
    let p = f64p();
    let x = input(&p, [6, 3, 4, 4], 9);
    let err = |n: usize| {
        let s = conv_stack(&p, n, Family::Smooth, Scheme::Heun, 4);
        s.reconstruction_error(x.clone(), BnMode::Cached)
    };
    let (coarse, fine) = (err(16), err(64));
    let slope = (fine / coarse).ln() / 4f64.ln();
    assert!(
        slope < -2.5,
        "reconstruction error slope {slope} ({coarse:e} → {fine:e})"
    );
}

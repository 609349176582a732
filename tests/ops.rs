//! The hand-written ops of `src/ops/` against burn's composition on flex (and, with `tch`, on
//! LibTorch), forward and backward,
//! in f32 and f64, on odd shapes (batch 1, 1×1 maps, channel counts that are not multiples of
//! 16): a fast path must compute what the composed default computes.

use burn::backend::TensorMetadata;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;
use resnet_ode::device::{to_vec, Placement, Precision};
use resnet_ode::norm::{BatchNorm, BnMode, Norm};
use resnet_ode::ops::{batch_norm, conv3x3, sgd_steps, SgdRule};
use resnet_ode::params::independent_copy;
use resnet_ode::residual::conv1x1;
use resnet_ode::rng::Rng;

/// Largest |a − b| relative to the largest |b|, or to 1 (the inputs' scale) when that is smaller:
/// a gradient that nearly cancels (batch norm over two values) is compared with the size of the
/// terms that cancel, not with the remainder.
fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (p, q)| m.max((p - q).abs())) / scale
}

/// Every output of a fast path (`ours[i]`, named `names[i]`) within `tol` ([`rel_diff`]) of the
/// composed default's, which must exist; `context` names the case in a failure.
fn assert_close(
    context: &str,
    names: &[&str],
    ours: &[Vec<f64>],
    reference: &[Vec<f64>],
    tol: f64,
) {
    for (what, (u, v)) in names.iter().zip(ours.iter().zip(reference)) {
        assert!(!v.is_empty(), "{context}: {what} missing");
        let d = rel_diff(u, v);
        assert!(d <= tol, "{context} {what}: {d:e}");
    }
}

fn random<const D: usize>(p: &Placement, rng: &mut Rng, shape: [usize; D]) -> Tensor<D> {
    p.tensor(rng.normals(shape.iter().product()), shape)
}

/// A LibTorch CPU placement of `precision`.
#[cfg(feature = "tch")]
fn libtorch(precision: Precision) -> Placement {
    #[allow(deprecated)]
    Placement::new(burn::tensor::Device::libtorch(), precision)
}

type Conv = fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>;

fn composed(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    conv2d(x, w, Some(b), ConvOptions::new([1, 1], [1, 1], [1, 1], 1))
}

/// Output, then the gradients of `Σ r ⊙ conv(x, w, b)` with respect to x, w and b.
fn value_and_grads(
    p: &Placement,
    inputs: [&[f64]; 4],
    shapes: [[usize; 4]; 3],
    conv: Conv,
) -> [Vec<f64>; 4] {
    let [xs, ws, ys] = shapes;
    let x = p.tensor(inputs[0].to_vec(), xs).require_grad();
    let w = p.tensor(inputs[1].to_vec(), ws).require_grad();
    let b = p.tensor(inputs[2].to_vec(), [ws[0]]).require_grad();
    let r = p.tensor(inputs[3].to_vec(), ys);
    let y = conv(x.clone(), w.clone(), b.clone());
    let grads = (y.clone() * r).sum().backward();
    let grad = |t: Option<Tensor<4>>| t.map(|t| to_vec(&t)).unwrap_or_default();
    [
        to_vec(&y),
        grad(x.grad(&grads)),
        grad(w.grad(&grads)),
        b.grad(&grads).map(|t| to_vec(&t)).unwrap_or_default(),
    ]
}

#[test]
fn conv3x3_matches_burns_conv2d_forward_and_backward() {
    conv3x3_against_conv2d(Placement::flex);
}

/// LibTorch's path (ATen's `convolution_backward` through the shim) against burn-tch's
/// composition of the same gradients.
#[cfg(feature = "tch")]
#[test]
fn conv3x3_matches_burns_conv2d_on_libtorch() {
    conv3x3_against_conv2d(libtorch);
}

fn conv3x3_against_conv2d(place: fn(Precision) -> Placement) {
    // (batch, cin, cout, h, w)
    let shapes = [
        (4, 16, 16, 10, 10),
        (1, 3, 5, 7, 6),
        (2, 1, 1, 1, 1),
        (3, 17, 9, 4, 1),
        (5, 24, 40, 3, 8),
        // Multiples of 16 output channels take the direct AVX-512 kernel where the CPU has it.
        (2, 5, 32, 1, 1),
        (3, 16, 16, 1, 7),
        (2, 7, 16, 9, 3),
        (9, 16, 48, 5, 5),
        (2, 3, 16, 20, 20),
    ];
    for precision in [Precision::F32, Precision::F64] {
        let p = place(precision);
        // f32 GEMMs sum in another order than burn's: rounding of a few ulps of the sums.
        let tol = if precision == Precision::F32 {
            2e-5
        } else {
            1e-12
        };
        for (i, &(n, cin, cout, h, w)) in shapes.iter().enumerate() {
            let mut rng = Rng::new(i as u64);
            let (xs, ws, ys) = ([n, cin, h, w], [cout, cin, 3, 3], [n, cout, h, w]);
            let data = [
                rng.normals(n * cin * h * w),
                rng.normals(cout * cin * 9),
                rng.normals(cout),
                rng.normals(n * cout * h * w),
            ];
            let inputs = [&data[0][..], &data[1][..], &data[2][..], &data[3][..]];
            let fast = value_and_grads(&p, inputs, [xs, ws, ys], conv3x3);
            let slow = value_and_grads(&p, inputs, [xs, ws, ys], composed);
            let context = format!("{precision} {:?}", (n, cin, cout, h, w));
            assert_close(&context, &["y", "dx", "dw", "db"], &fast, &slow, tol);
        }
    }
}

fn composed_1x1(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    conv2d(x, w, Some(b), ConvOptions::new([1, 1], [0, 0], [1, 1], 1))
}

fn matmul_1x1(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    conv1x1(x, w, Some(b))
}

#[test]
fn conv1x1_as_a_matrix_product_matches_burns_conv2d() {
    // (batch, cin, cout, h, w)
    let shapes = [(4, 16, 4, 7, 7), (1, 3, 5, 1, 1), (3, 4, 16, 5, 2)];
    for precision in [Precision::F32, Precision::F64] {
        let p = Placement::flex(precision);
        let tol = if precision == Precision::F32 {
            2e-5
        } else {
            1e-12
        };
        for (i, &(n, cin, cout, h, w)) in shapes.iter().enumerate() {
            let mut rng = Rng::new(10 + i as u64);
            let (xs, ws, ys) = ([n, cin, h, w], [cout, cin, 1, 1], [n, cout, h, w]);
            let data = [
                rng.normals(n * cin * h * w),
                rng.normals(cout * cin),
                rng.normals(cout),
                rng.normals(n * cout * h * w),
            ];
            let inputs = [&data[0][..], &data[1][..], &data[2][..], &data[3][..]];
            let fast = value_and_grads(&p, inputs, [xs, ws, ys], matmul_1x1);
            let slow = value_and_grads(&p, inputs, [xs, ws, ys], composed_1x1);
            let context = format!("{precision} {:?}", (n, cin, cout, h, w));
            assert_close(&context, &["y", "dx", "dw", "db"], &fast, &slow, tol);
        }
    }
}

#[test]
fn conv3x3_is_deterministic() {
    let p = Placement::flex(Precision::F32);
    let mut rng = Rng::new(7);
    let x = random(&p, &mut rng, [33, 16, 10, 10]).require_grad();
    let w = random(&p, &mut rng, [16, 16, 3, 3]).require_grad();
    let b = random(&p, &mut rng, [16]).require_grad();
    let run = || {
        let y = conv3x3(x.clone(), w.clone(), b.clone());
        let grads = (y.clone() * y.clone()).sum().backward();
        let w_grad = w.grad(&grads).map(|t| to_vec(&t)).unwrap_or_default();
        (to_vec(&y), w_grad)
    };
    let first = run();
    for _ in 0..3 {
        assert!(run() == first, "same inputs, different bits");
    }
}

/// The cached-statistics evaluation of `norm.rs` composed from tensor ops: value normalised with
/// `(mc, vc)`, derivative of batch normalisation at `x`.
fn straight_through(
    x: Tensor<4>,
    g: Tensor<1>,
    b: Tensor<1>,
    mc: Tensor<1>,
    vc: Tensor<1>,
) -> Tensor<4> {
    let c = x.dims()[1];
    let mean = x.clone().mean_dims(&[0, 2, 3]);
    let centered = x - mean.clone();
    let var = centered.clone().square().mean_dims(&[0, 2, 3]);
    let centered = centered + mean.detach() - mc.reshape([1, c, 1, 1]);
    let var = var.clone() - var.detach() + vc.reshape([1, c, 1, 1]);
    centered / (var + 1e-5).sqrt() * g.reshape([1, c, 1, 1]) + b.reshape([1, c, 1, 1])
}

#[test]
fn batch_norm_kernels_match_burns_composition() {
    batch_norm_against_composition(&Placement::flex, &[Precision::F32, Precision::F64]);
}

/// LibTorch's path (ATen's batch norm, `native_batch_norm_backward` through the shim and the
/// straight-through correction) against burn-tch's composition.
#[cfg(feature = "tch")]
#[test]
fn batch_norm_kernels_match_burns_composition_on_libtorch() {
    batch_norm_against_composition(&libtorch, &[Precision::F32, Precision::F64]);
}

/// CubeCL's path (the trait's default bodies, `ops/batch_norm/composed.rs`) against burn's
/// batch norm on the same device, on every CubeCL device this build and machine run (none in
/// CI: it skips; the composition is checked against flex's kernels in a unit test).
#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
#[test]
fn batch_norm_composition_matches_burns_on_cubecl() {
    for (spec, device) in cubecl_devices() {
        let precisions: &[Precision] = match spec.check_precision(Precision::F64) {
            Ok(()) => &[Precision::F32, Precision::F64],
            Err(_) => &[Precision::F32],
        };
        batch_norm_against_composition(&|p| Placement::new(device.clone(), p), precisions);
    }
}

/// The CubeCL devices this build and machine run (none in CI: a test over them skips, saying so).
#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
fn cubecl_devices() -> Vec<(resnet_ode::device::DeviceSpec, burn::tensor::Device)> {
    let found: Vec<_> = ["cuda:0", "vulkan", "wgpu"]
        .into_iter()
        .map(|name| name.parse().expect("a known device name"))
        .filter_map(|spec: resnet_ode::device::DeviceSpec| {
            Some((spec.clone(), spec.device().ok()?))
        })
        .collect();
    if found.is_empty() {
        eprintln!("skipping: no CubeCL device in this build and machine");
    }
    found
}

fn batch_norm_against_composition(
    place: &dyn Fn(Precision) -> Placement,
    precisions: &[Precision],
) {
    use burn::tensor::activation::relu;
    use burn::tensor::module::batch_norm_train;
    use resnet_ode::ops::batch_norm::{normalize, statistics, train};
    let shapes = [[6, 16, 10, 10], [1, 3, 2, 5], [2, 1, 1, 1], [5, 17, 3, 1]];
    for &precision in precisions {
        let p = place(precision);
        let tol = if precision == Precision::F32 {
            2e-5
        } else {
            1e-11
        };
        for (i, &shape) in shapes.iter().enumerate() {
            let c = shape[1];
            let mut rng = Rng::new(10 + i as u64);
            let x0 = random(&p, &mut rng, shape);
            let (g0, b0) = (random(&p, &mut rng, [c]), random(&p, &mut rng, [c]));
            let (mc, vc) = (
                random(&p, &mut rng, [c]),
                random(&p, &mut rng, [c]).abs() + 0.5,
            );
            let r = random(&p, &mut rng, shape);
            // (name, fast, composed) as functions of (x, γ, β).
            type Bn = Box<dyn Fn(Tensor<4>, Tensor<1>, Tensor<1>) -> Tensor<4>>;
            let (mc2, vc2, mc3, vc3) = (mc.clone(), vc.clone(), mc.clone(), vc.clone());
            let (mc4, vc4, mc5, vc5) = (mc.clone(), vc.clone(), mc.clone(), vc.clone());
            let (rm, rv) = (mc.clone().without_autodiff(), vc.clone().without_autodiff());
            let (rm2, rv2) = (rm.clone(), rv.clone());
            let cases: Vec<(&str, Bn, Bn)> = vec![
                (
                    "training mode + relu",
                    Box::new(move |x, g, b| {
                        let running = [rm.clone(), rv.clone()];
                        train(x, [g, b], running, [0.1, 1e-5], true, false).0
                    }),
                    Box::new(|x, g, b| relu(batch_norm_train(x, g, b, 1e-5).output)),
                ),
                (
                    "training mode",
                    Box::new(move |x, g, b| {
                        let running = [rm2.clone(), rv2.clone()];
                        train(x, [g, b], running, [0.1, 1e-5], false, false).0
                    }),
                    Box::new(|x, g, b| batch_norm_train(x, g, b, 1e-5).output),
                ),
                (
                    "batch statistics + relu",
                    Box::new(|x, g, b| {
                        let (m, v) = statistics(x.clone());
                        normalize(x, [g, b, m, v], 1e-5, true, false)
                    }),
                    Box::new(|x, g, b| relu(batch_norm_train(x, g, b, 1e-5).output)),
                ),
                (
                    "batch statistics",
                    Box::new(|x, g, b| {
                        let (m, v) = statistics(x.clone());
                        normalize(x, [g, b, m, v], 1e-5, false, false)
                    }),
                    Box::new(|x, g, b| batch_norm_train(x, g, b, 1e-5).output),
                ),
                (
                    "cached statistics (straight-through)",
                    Box::new(move |x, g, b| {
                        normalize(x, [g, b, mc2.clone(), vc2.clone()], 1e-5, false, true)
                    }),
                    Box::new(move |x, g, b| straight_through(x, g, b, mc3.clone(), vc3.clone())),
                ),
                (
                    "cached statistics (straight-through) + relu",
                    Box::new(move |x, g, b| {
                        normalize(x, [g, b, mc4.clone(), vc4.clone()], 1e-5, true, true)
                    }),
                    Box::new(move |x, g, b| {
                        relu(straight_through(x, g, b, mc5.clone(), vc5.clone()))
                    }),
                ),
            ];
            for (name, fast, slow) in &cases {
                let eval = |f: &Bn| {
                    let (x, g, b) = (
                        x0.clone().require_grad(),
                        g0.clone().require_grad(),
                        b0.clone().require_grad(),
                    );
                    let y = f(x.clone(), g.clone(), b.clone());
                    let grads = (y.clone() * r.clone()).sum().backward();
                    let gx = x.grad(&grads).map(|t| to_vec(&t)).unwrap_or_default();
                    let gg = g.grad(&grads).map(|t| to_vec(&t)).unwrap_or_default();
                    let gb = b.grad(&grads).map(|t| to_vec(&t)).unwrap_or_default();
                    [to_vec(&y), gx, gg, gb]
                };
                let (a, e) = (eval(fast), eval(slow));
                let context = format!("{precision} {shape:?} {name}");
                assert_close(&context, &["y", "dx", "dγ", "dβ"], &a, &e, tol);
            }
        }
    }
}

/// `ops::relu` against burn's `relu`, value and gradient, zeros included (their gradient is 0).
fn relu_against_burns(p: &Placement) {
    let mut rng = Rng::new(3);
    let mut values = rng.normals(2 * 5 * 3 * 3);
    values[..6].fill(0.0);
    let r = random(p, &mut rng, [2, 5, 3, 3]);
    let eval = |f: fn(Tensor<4>) -> Tensor<4>| {
        let x = p.tensor(values.clone(), [2, 5, 3, 3]).require_grad();
        let y = f(x.clone());
        let grads = (y.clone() * r.clone()).sum().backward();
        let gx = x.grad(&grads).map(|t| to_vec(&t)).unwrap_or_default();
        (to_vec(&y), gx)
    };
    let (ours, burns) = (
        eval(resnet_ode::ops::relu),
        eval(burn::tensor::activation::relu),
    );
    assert!(!burns.1.is_empty(), "gradient missing");
    assert_eq!(ours, burns, "{:?}", p.device);
}

#[test]
fn relu_matches_burns() {
    for precision in [Precision::F32, Precision::F64] {
        relu_against_burns(&Placement::flex(precision));
    }
}

/// LibTorch's ReLU backward is ATen's `threshold_backward`.
#[cfg(feature = "tch")]
#[test]
fn relu_matches_burns_on_libtorch() {
    for precision in [Precision::F32, Precision::F64] {
        relu_against_burns(&libtorch(precision));
    }
}

/// `ops::scaled_dot` against `s · Σ a ⊙ b`: its value, and its gradient with respect to `a`
/// (`b` is a constant of the product).
fn scaled_dot_against_composition(p: &Placement, tol: f64) {
    let mut rng = Rng::new(5);
    let (a0, b) = (
        random(p, &mut rng, [3, 4, 5, 2]),
        random(p, &mut rng, [3, 4, 5, 2]),
    );
    let eval = |f: &dyn Fn(Tensor<4>) -> Tensor<1>| {
        let a = a0.clone().require_grad();
        let value = f(a.clone());
        let grads = (value.clone() * 3.0).sum().backward();
        let ga = a.grad(&grads).map(|t| to_vec(&t)).unwrap_or_default();
        [to_vec(&value), ga]
    };
    let ours = eval(&|a| resnet_ode::ops::scaled_dot(a, b.clone(), -0.25));
    let composed = eval(&|a| (a * b.clone()).sum() * -0.25);
    let context = format!("{:?}", p.device);
    assert_close(&context, &["value", "grad"], &ours, &composed, tol);
}

#[test]
fn scaled_dot_matches_the_composition() {
    scaled_dot_against_composition(&Placement::flex(Precision::F32), 1e-6);
    scaled_dot_against_composition(&Placement::flex(Precision::F64), 1e-14);
}

/// LibTorch's value is ATen's `dot`.
#[cfg(feature = "tch")]
#[test]
fn scaled_dot_matches_the_composition_on_libtorch() {
    scaled_dot_against_composition(&libtorch(Precision::F32), 1e-6);
    scaled_dot_against_composition(&libtorch(Precision::F64), 1e-14);
}

/// CubeCL's value is a product and a device-wide sum, on every CubeCL device this build and
/// machine run (none in CI: it skips).
#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
#[test]
fn scaled_dot_matches_the_composition_on_cubecl() {
    for (_, device) in cubecl_devices() {
        scaled_dot_against_composition(&Placement::new(device, Precision::F32), 1e-6);
    }
}

/// A block without a bias (the CIFAR ResNets'): the zero bias is a constant, whose gradient the
/// op may skip; the input and weight gradients must still be conv2d's.
fn conv3x3_without_bias_against_conv2d(p: &Placement, tol: f64) {
    let mut rng = Rng::new(8);
    let (x0, w0) = (
        random(p, &mut rng, [3, 5, 6, 7]),
        random(p, &mut rng, [16, 5, 3, 3]),
    );
    let r = random(p, &mut rng, [3, 16, 6, 7]);
    let eval = |ours: bool| {
        let (x, w) = (x0.clone().require_grad(), w0.clone().require_grad());
        let y = if ours {
            conv3x3(x.clone(), w.clone(), p.zeros([16]))
        } else {
            conv2d(
                x.clone(),
                w.clone(),
                None,
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            )
        };
        let grads = (y.clone() * r.clone()).sum().backward();
        let grad = |t: &Tensor<4>| t.grad(&grads).map(|g| to_vec(&g)).unwrap_or_default();
        [to_vec(&y), grad(&x), grad(&w)]
    };
    let context = format!("{:?}", p.device);
    assert_close(&context, &["y", "dx", "dw"], &eval(true), &eval(false), tol);
}

#[test]
fn conv3x3_without_bias_matches_conv2d() {
    conv3x3_without_bias_against_conv2d(&Placement::flex(Precision::F32), 2e-5);
    conv3x3_without_bias_against_conv2d(&Placement::flex(Precision::F64), 1e-12);
}

/// LibTorch skips the bias's reduction there (`convolution_backward` with mask 2).
#[cfg(feature = "tch")]
#[test]
fn conv3x3_without_bias_matches_conv2d_on_libtorch() {
    conv3x3_without_bias_against_conv2d(&libtorch(Precision::F32), 2e-5);
    conv3x3_without_bias_against_conv2d(&libtorch(Precision::F64), 1e-12);
}

/// PyTorch's SGD on one value: `d = g + wd·w; b = μb + d (b = d at first); s = nesterov ?
/// d + μb : b; w −= lr·s`, in f64.
fn sgd_reference(w: f64, g: f64, b: Option<f64>, rule: SgdRule) -> (f64, f64) {
    let d = g + rule.weight_decay * w;
    let b = b.map_or(d, |b| rule.momentum * b + d);
    let s = if rule.nesterov {
        d + rule.momentum * b
    } else {
        b
    };
    (w - rule.lr * s, b)
}

/// `ops::sgd_steps`, two steps in a row (zero buffers at first, as the optimizer passes), against
/// [`sgd_reference`] for plain, decayed and Nesterov rules, on three parameters of 37, 5 and 1
/// values (shaped `[37]`, `[5, 1]`, `[1, 1, 1, 1]`) updated together (on LibTorch as ATen's
/// multi-tensor ops; elsewhere one by one): values and shapes.
fn sgd_step_against_reference(p: &Placement, tol: f64) {
    let mut rng = Rng::new(11);
    let sizes = [37, 5, 1];
    let draw = |rng: &mut Rng| sizes.map(|n| rng.normals(n));
    let (w0, g1, g2) = (draw(&mut rng), draw(&mut rng), draw(&mut rng));
    for (weight_decay, momentum, nesterov) in
        [(0.0, 0.9, false), (5e-4, 0.9, false), (0.1, 0.5, true)]
    {
        let rule = SgdRule {
            lr: 0.3,
            weight_decay,
            momentum,
            nesterov,
        };
        let shapes = [vec![37], vec![5, 1], vec![1, 1, 1, 1]];
        let t = |v: &[Vec<f64>]| {
            v.iter()
                .enumerate()
                .map(|(k, v)| {
                    let x = p.tensor(v.clone(), [v.len()]).without_autodiff();
                    match k {
                        0 => x.into_dispatch(),
                        1 => x.reshape([5, 1]).into_dispatch(),
                        _ => x.reshape([1, 1, 1, 1]).into_dispatch(),
                    }
                })
                .collect::<Vec<_>>()
        };
        let zeros = sizes.map(|n| vec![0.0; n]);
        let (w1, b1) = sgd_steps(t(&w0), t(&g1), t(&zeros), rule);
        let (w2, b2) = sgd_steps(w1.clone(), t(&g2), b1.clone(), rule);
        for (k, &n) in sizes.iter().enumerate() {
            let mut reference = [vec![], vec![], vec![], vec![]];
            for i in 0..n {
                let (w, b) = sgd_reference(w0[k][i], g1[k][i], None, rule);
                let (ww, bb) = sgd_reference(w, g2[k][i], Some(b), rule);
                for (r, v) in reference.iter_mut().zip([w, b, ww, bb]) {
                    r.push(v);
                }
            }
            let context = format!("{:?} {rule:?} parameter {k}", p.device);
            for t in [&w1[k], &b1[k], &w2[k], &b2[k]] {
                assert_eq!(t.shape().to_vec(), shapes[k], "{context}");
            }
            let ours = [&w1[k], &b1[k], &w2[k], &b2[k]]
                .map(|t| to_vec(&Tensor::<1>::from_dispatch(t.clone())));
            assert_close(&context, &["w1", "b1", "w2", "b2"], &ours, &reference, tol);
        }
    }
}

#[test]
fn sgd_step_follows_pytorchs_rule() {
    sgd_step_against_reference(&Placement::flex(Precision::F32), 1e-6);
    sgd_step_against_reference(&Placement::flex(Precision::F64), 1e-14);
}

#[cfg(feature = "tch")]
#[test]
fn sgd_step_follows_pytorchs_rule_on_libtorch() {
    sgd_step_against_reference(&libtorch(Precision::F32), 1e-6);
    sgd_step_against_reference(&libtorch(Precision::F64), 1e-14);
}

/// `ops::batch_norm::update_statistics` against the batch mean and biased variance of a
/// `[n, 19, 3]` input and PyTorch's running rule `(1 − m)·r + m·s`, the variance's batch value
/// made unbiased by `M/(M − 1)` (M = 12; and M = 1, where the variance is 0 and unbias 1); the
/// training-mode batch norm's update too. Where the device updates in place (LibTorch) the
/// running tensors passed in hold the new values.
fn update_statistics_against_reference(p: &Placement, tol: f64) {
    let mut rng = Rng::new(12);
    let (c, k, m) = (19, 3, 0.1);
    for (n, k) in [(4, k), (1, 1)] {
        let xs = rng.normals(n * c * k);
        let r_mean = rng.normals(c);
        let r_var: Vec<f64> = rng.normals(c).iter().map(|v| v * v).collect();
        let t = |v: &[f64]| p.tensor(v.to_vec(), [c]).without_autodiff();
        let (rm, rv) = (t(&r_mean), t(&r_var));
        let x = p.tensor(xs.clone(), [n, c, k]).without_autodiff();
        let (mean, var, updated) =
            batch_norm::update_statistics(x.clone(), [rm.clone(), rv.clone()], m);
        let (rm, rv) = updated.unwrap_or((rm, rv));
        let (rm_t, rv_t) = (t(&r_mean), t(&r_var));
        let (gamma, beta) = (t(&vec![1.0; c]), t(&vec![0.0; c]));
        let running = [rm_t.clone(), rv_t.clone()];
        let (_, trained) = batch_norm::train(x, [gamma, beta], running, [m, 1e-5], false, true);
        let (rm_t, rv_t) = trained.unwrap_or((rm_t, rv_t));
        let count = (n * k) as f64;
        let values = |j: usize| (0..n).flat_map(move |i| (0..k).map(move |l| (i * c + j) * k + l));
        let mu: Vec<f64> = (0..c)
            .map(|j| values(j).map(|e| xs[e]).sum::<f64>() / count)
            .collect();
        let sigma2: Vec<f64> = (0..c)
            .map(|j| values(j).map(|e| (xs[e] - mu[j]).powi(2)).sum::<f64>() / count)
            .collect();
        let unbias = count / (count.max(2.0) - 1.0);
        let blend = |r: &[f64], s: &[f64], w: f64| -> Vec<f64> {
            r.iter()
                .zip(s)
                .map(|(r, s)| (1.0 - m) * r + w * s)
                .collect()
        };
        let reference = [
            mu.clone(),
            sigma2.clone(),
            blend(&r_mean, &mu, m),
            blend(&r_var, &sigma2, m * unbias),
        ];
        let context = format!("{:?} M = {count}", p.device);
        assert_close(
            &context,
            &["mean", "var", "running mean", "running var"],
            &[to_vec(&mean), to_vec(&var), to_vec(&rm), to_vec(&rv)],
            &reference,
            tol,
        );
        assert_close(
            &format!("{context} (training mode)"),
            &["running mean", "running var"],
            &[to_vec(&rm_t), to_vec(&rv_t)],
            &reference[2..],
            tol,
        );
    }
}

#[test]
fn update_statistics_follow_pytorchs_rule() {
    update_statistics_against_reference(&Placement::flex(Precision::F32), 1e-6);
    update_statistics_against_reference(&Placement::flex(Precision::F64), 1e-14);
}

#[cfg(feature = "tch")]
#[test]
fn update_statistics_follow_pytorchs_rule_on_libtorch() {
    update_statistics_against_reference(&libtorch(Precision::F32), 1e-6);
    update_statistics_against_reference(&libtorch(Precision::F64), 1e-14);
}

/// A training forward through an independent copy of a batch norm moves the copy's running
/// statistics and leaves the original's (LibTorch updates them in place: the copy must own them).
fn copies_own_their_running_statistics(p: &Placement) {
    let original = BatchNorm::new(p, 3);
    let copy = independent_copy(&original);
    let x = random(p, &mut Rng::new(4), [8, 3]).without_autodiff();
    let _ = copy.forward(x, &mut Norm::train(BnMode::Cached));
    let values = |b: &BatchNorm| {
        let mut v = to_vec(&b.running_mean.value_sync());
        v.extend(to_vec(&b.running_var.value_sync()));
        v
    };
    let context = format!("{:?}", p.device);
    assert_eq!(
        values(&original),
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        "{context}"
    );
    assert_ne!(values(&copy), values(&original), "{context}");
}

#[test]
fn independent_copies_own_their_running_statistics() {
    copies_own_their_running_statistics(&Placement::flex(Precision::F32));
}

#[cfg(feature = "tch")]
#[test]
fn independent_copies_own_their_running_statistics_on_libtorch() {
    copies_own_their_running_statistics(&libtorch(Precision::F32));
}

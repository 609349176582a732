//! ODE solvers on burn tensors: fixed-step classical RK4 and adaptive Dormand–Prince 5(4).
//!
//! They provide the Neural ODE reference trajectories `dx/dt = f(x, θ(t))` against which the
//! depth-N ResNets are compared. States keep the caller's dtype (f32 or f64) and device: every
//! new tensor is derived from the initial state or from evaluations of the field.
//!
//! Time grids may run forwards or backwards (the adjoint integrates backwards in time); they
//! must be strictly monotone. Both solvers return the state at each requested time, landing
//! exactly on it.

use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// A time-dependent vector field `f(t, x)`. Closures `FnMut(f64, &Tensor<D>) -> Tensor<D>`
/// implement it; `&mut self` lets a field count calls or cache parameters.
pub trait VectorField<const D: usize> {
    /// Evaluates `f(t, x)`; the result must have the shape of `x`.
    fn eval(&mut self, t: f64, x: &Tensor<D>) -> Tensor<D>;
}

impl<const D: usize, F> VectorField<D> for F
where
    F: FnMut(f64, &Tensor<D>) -> Tensor<D>,
{
    fn eval(&mut self, t: f64, x: &Tensor<D>) -> Tensor<D> {
        self(t, x)
    }
}

/// The states at the requested times, with the solver's work counts.
#[derive(Debug, Clone)]
pub struct Solution<const D: usize> {
    /// `states[i]` is the state at `times[i]`; `states[0]` is the initial state.
    pub states: Vec<Tensor<D>>,
    /// The requested times, starting with the initial time.
    pub times: Vec<f64>,
    /// Number of evaluations of the vector field.
    pub nfe: usize,
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps (always 0 for fixed-step RK4).
    pub rejected: usize,
}

/// Fixed-step classical (4th-order) Runge–Kutta with `steps` equal steps over the interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rk4 {
    /// Number of equal steps on `[t0, t1]`.
    pub steps: usize,
}

impl Rk4 {
    /// Integrates from `(t0, x0)` to `t1`; see [`solve_rk4`].
    pub fn solve<const D: usize>(
        &self,
        f: &mut impl VectorField<D>,
        x0: Tensor<D>,
        t0: f64,
        t1: f64,
    ) -> Result<Solution<D>> {
        solve_rk4(f, x0, t0, t1, self.steps)
    }
}

/// Integrates `dx/dt = f(t, x)` from `(t0, x0)` to `t1` with `steps` RK4 steps.
///
/// The solution holds `[x0, x(t1)]` at times `[t0, t1]`.
pub fn solve_rk4<const D: usize>(
    f: &mut impl VectorField<D>,
    x0: Tensor<D>,
    t0: f64,
    t1: f64,
    steps: usize,
) -> Result<Solution<D>> {
    let times = [t0, t1];
    let states = solve_rk4_grid(f, x0, &times, steps)?;
    Ok(Solution {
        states,
        times: times.to_vec(),
        nfe: 4 * steps,
        accepted: steps,
        rejected: 0,
    })
}

/// Integrates with RK4 through a strictly monotone time grid, taking `substeps_per_interval`
/// equal steps between consecutive times, and returns the state at every time (the first is
/// `x0`). Used to compare a depth-N ResNet with the ODE at `t = n/N`.
pub fn solve_rk4_grid<const D: usize>(
    f: &mut impl VectorField<D>,
    x0: Tensor<D>,
    times: &[f64],
    substeps_per_interval: usize,
) -> Result<Vec<Tensor<D>>> {
    if substeps_per_interval == 0 {
        return Err(Error::invalid("RK4 steps", "must be at least 1"));
    }
    check_times(times)?;
    check_finite(&x0, "RK4 initial state")?;
    // Only the first evaluation is checked: a read-back per step would stall a GPU.
    let mut first_k1 = Some(eval_checked(f, times[0], &x0)?);
    let mut states = vec![x0];
    for pair in times.windows(2) {
        let mut x = states[states.len() - 1].clone();
        let h = (pair[1] - pair[0]) / substeps_per_interval as f64;
        for i in 0..substeps_per_interval {
            // Times from the interval's start, not accumulated, so rounding does not drift.
            let t = pair[0] + (pair[1] - pair[0]) * i as f64 / substeps_per_interval as f64;
            let k1 = first_k1.take().unwrap_or_else(|| f.eval(t, &x));
            x = rk4_step(f, t, &x, k1, h);
        }
        check_finite(&x, &format!("RK4 state at t={}", pair[1]))?;
        states.push(x);
    }
    Ok(states)
}

fn rk4_step<const D: usize>(
    f: &mut impl VectorField<D>,
    t: f64,
    x: &Tensor<D>,
    k1: Tensor<D>,
    h: f64,
) -> Tensor<D> {
    let k2 = f.eval(t + h / 2.0, &combine(x, h, &[(0.5, &k1)]));
    let k3 = f.eval(t + h / 2.0, &combine(x, h, &[(0.5, &k2)]));
    let k4 = f.eval(t + h, &combine(x, h, &[(1.0, &k3)]));
    let w = 1.0 / 6.0;
    combine(x, h, &[(w, &k1), (2.0 * w, &k2), (2.0 * w, &k3), (w, &k4)])
}

/// Settings of the adaptive Dormand–Prince 5(4) solver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dopri5Config {
    /// Relative tolerance on the local error.
    pub rtol: f64,
    /// Absolute tolerance on the local error.
    pub atol: f64,
    /// Cap on attempted (accepted + rejected) steps; exceeding it is an error.
    pub max_steps: usize,
    /// Initial step size; `None` picks one with Hairer's heuristic.
    pub h0: Option<f64>,
}

impl Default for Dopri5Config {
    fn default() -> Self {
        Dopri5Config {
            rtol: 1e-6,
            atol: 1e-9,
            max_steps: 100_000,
            h0: None,
        }
    }
}

impl Dopri5Config {
    fn validate(&self) -> Result<()> {
        let tol_ok = |v: f64| v.is_finite() && v >= 0.0;
        if !tol_ok(self.rtol) || !tol_ok(self.atol) || self.rtol + self.atol == 0.0 {
            return Err(Error::invalid(
                "rtol/atol",
                format!(
                    "need finite, non-negative tolerances, not both zero (rtol={}, atol={})",
                    self.rtol, self.atol
                ),
            ));
        }
        if self.max_steps == 0 {
            return Err(Error::invalid("max_steps", "must be at least 1"));
        }
        match self.h0 {
            Some(h) if !(h.is_finite() && h > 0.0) => Err(Error::invalid(
                "h0",
                format!("initial step must be positive and finite, got {h}"),
            )),
            _ => Ok(()),
        }
    }
}

/// Integrates `dx/dt = f(t, x)` with the adaptive Dormand–Prince 5(4) pair from
/// `(times[0], x0)` through the strictly monotone `times`, returning the state at each.
///
/// Local extrapolation (the 5th-order solution is propagated), FSAL (6 evaluations per step),
/// error norm `RMS(err / (atol + rtol·max(|x|, |x_new|)))`, a PI step-size controller, and
/// steps clipped to land exactly on each requested time.
pub fn solve_dopri5<const D: usize>(
    f: &mut impl VectorField<D>,
    x0: Tensor<D>,
    times: &[f64],
    cfg: &Dopri5Config,
) -> Result<Solution<D>> {
    cfg.validate()?;
    check_times(times)?;
    check_finite(&x0, "Dopri5 initial state")?;
    let mut solver = Dopri5 {
        f,
        cfg: *cfg,
        nfe: 0,
        accepted: 0,
        rejected: 0,
    };
    let states = solver.run(x0, times)?;
    Ok(Solution {
        states,
        times: times.to_vec(),
        nfe: solver.nfe,
        accepted: solver.accepted,
        rejected: solver.rejected,
    })
}

// Dormand–Prince 5(4) tableau (Hairer, Nørsett & Wanner, Solving ODEs I, Table 5.2).
const C: [f64; 6] = [0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];
const A2: [f64; 1] = [0.2];
const A3: [f64; 2] = [3.0 / 40.0, 9.0 / 40.0];
const A4: [f64; 3] = [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0];
const A5: [f64; 4] = [
    19372.0 / 6561.0,
    -25360.0 / 2187.0,
    64448.0 / 6561.0,
    -212.0 / 729.0,
];
const A6: [f64; 5] = [
    9017.0 / 3168.0,
    -355.0 / 33.0,
    46732.0 / 5247.0,
    49.0 / 176.0,
    -5103.0 / 18656.0,
];
/// 5th-order weights (k2's weight is zero), also the last stage's row: hence FSAL.
const B: [f64; 6] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
];
/// Differences between the 5th- and 4th-order weights, over k1..k7.
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

/// PI controller (Hairer's DOPRI5 with β = 0.04): factor = SAFETY·err^-α·err_prev^β.
const SAFETY: f64 = 0.9;
const ALPHA: f64 = 0.2 - 0.04 * 0.75;
const BETA: f64 = 0.04;
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;
/// Floor on the previous error so one very accurate step does not freeze the controller.
const ERR_PREV_FLOOR: f64 = 1e-4;

struct Dopri5<'a, F> {
    f: &'a mut F,
    cfg: Dopri5Config,
    nfe: usize,
    accepted: usize,
    rejected: usize,
}

/// A trial step: the 5th-order state, the field there (next step's k1) and the error norm.
struct Trial<const D: usize> {
    x: Tensor<D>,
    k7: Tensor<D>,
    err: f64,
}

impl<F> Dopri5<'_, F> {
    fn eval<const D: usize>(&mut self, t: f64, x: &Tensor<D>) -> Tensor<D>
    where
        F: VectorField<D>,
    {
        self.nfe += 1;
        self.f.eval(t, x)
    }

    fn run<const D: usize>(&mut self, x0: Tensor<D>, times: &[f64]) -> Result<Vec<Tensor<D>>>
    where
        F: VectorField<D>,
    {
        let (t0, t_end) = (times[0], times[times.len() - 1]);
        let dir = (t_end - t0).signum();
        self.nfe += 1;
        let k1 = eval_checked(self.f, t0, &x0)?;
        let h = match self.cfg.h0 {
            Some(h) => h,
            None => self.initial_step(t0, &x0, &k1, dir)?,
        };
        let mut stepper = Stepper {
            t: t0,
            x: x0,
            k1,
            h: h.min((t_end - t0).abs()),
            err_prev: ERR_PREV_FLOOR,
            last_rejected: false,
            dir,
        };
        let mut states = vec![stepper.x.clone()];
        for &target in &times[1..] {
            while stepper.t != target {
                self.attempt(&mut stepper, target)?;
            }
            states.push(stepper.x.clone());
        }
        Ok(states)
    }

    /// One attempted step towards `target`, clipped so as not to pass it.
    fn attempt<const D: usize>(&mut self, s: &mut Stepper<D>, target: f64) -> Result<()>
    where
        F: VectorField<D>,
    {
        if self.accepted + self.rejected >= self.cfg.max_steps {
            return Err(Error::invalid(
                "max_steps",
                format!(
                    "Dopri5 exceeded {} steps at t={} before reaching t={target}; raise max_steps or loosen rtol/atol",
                    self.cfg.max_steps, s.t
                ),
            ));
        }
        let remaining = (target - s.t).abs();
        // Within rounding of the target: land on it rather than leave a sliver step.
        let clipped = s.h >= remaining * (1.0 - 1e-12);
        let h = if clipped { remaining } else { s.h };
        let trial = self.trial(s.t, &s.x, &s.k1, s.dir * h)?;
        if trial.err <= 1.0 {
            self.accepted += 1;
            s.accept(trial, h, clipped, target);
            Ok(())
        } else {
            self.rejected += 1;
            s.reject(trial.err, h)
        }
    }

    fn trial<const D: usize>(
        &mut self,
        t: f64,
        x: &Tensor<D>,
        k1: &Tensor<D>,
        h: f64,
    ) -> Result<Trial<D>>
    where
        F: VectorField<D>,
    {
        let k2 = self.eval(t + C[0] * h, &combine(x, h, &[(A2[0], k1)]));
        let k3 = self.eval(t + C[1] * h, &combine(x, h, &[(A3[0], k1), (A3[1], &k2)]));
        let k4 = self.eval(
            t + C[2] * h,
            &combine(x, h, &[(A4[0], k1), (A4[1], &k2), (A4[2], &k3)]),
        );
        let x5 = combine(
            x,
            h,
            &[(A5[0], k1), (A5[1], &k2), (A5[2], &k3), (A5[3], &k4)],
        );
        let k5 = self.eval(t + C[3] * h, &x5);
        let ks = [k1, &k2, &k3, &k4, &k5];
        let x6 = combine(x, h, &weighted(&A6, &ks));
        let k6 = self.eval(t + C[4] * h, &x6);
        let ks = [k1, &k2, &k3, &k4, &k5, &k6];
        let x_new = combine(x, h, &weighted(&B, &ks));
        let k7 = self.eval(t + C[5] * h, &x_new);
        let ks = [k1, &k2, &k3, &k4, &k5, &k6, &k7];
        let err_vec = combine(&x.zeros_like(), h, &weighted(&E, &ks));
        let err = self.error_norm(&err_vec, x, &x_new)?;
        Ok(Trial { x: x_new, k7, err })
    }

    /// `RMS(err / (atol + rtol·max(|x|, |x_new|)))`, or infinity when the trial state is not
    /// finite so that the step is rejected and retried smaller.
    fn error_norm<const D: usize>(
        &self,
        err: &Tensor<D>,
        x: &Tensor<D>,
        x_new: &Tensor<D>,
    ) -> Result<f64> {
        let scale = x.clone().abs().max_pair(x_new.clone().abs()) * self.cfg.rtol + self.cfg.atol;
        let ms = (err.clone() / scale).square().mean();
        // One read-back for both numbers: the sum of x_new is non-finite iff an entry is.
        let both = Tensor::cat(vec![ms, x_new.clone().sum()], 0);
        let v = read_f64(both, "Dopri5 error norm")?;
        let (ms, sum) = (v[0], v[1]);
        Ok(if ms.is_finite() && sum.is_finite() {
            ms.sqrt()
        } else {
            f64::INFINITY
        })
    }

    /// Hairer's starting step (Solving ODEs I, II.4): a step whose Euler error, estimated
    /// from the change of f over a small probe step, is about the tolerance.
    fn initial_step<const D: usize>(
        &mut self,
        t0: f64,
        x0: &Tensor<D>,
        f0: &Tensor<D>,
        dir: f64,
    ) -> Result<f64>
    where
        F: VectorField<D>,
    {
        let scale = x0.clone().abs() * self.cfg.rtol + self.cfg.atol;
        let d0 = rms(&(x0.clone() / scale.clone()))?;
        let d1 = rms(&(f0.clone() / scale.clone()))?;
        let h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        let x1 = combine(x0, dir * h0, &[(1.0, f0)]);
        let f1 = self.eval(t0 + dir * h0, &x1);
        let d2 = rms(&((f1 - f0.clone()) / scale))? / h0;
        let d12 = d1.max(d2);
        let h1 = if d12.is_finite() && d12 > 1e-15 {
            (0.01 / d12).powf(0.2)
        } else {
            (h0 * 1e-3).max(1e-6)
        };
        Ok((100.0 * h0).min(h1))
    }
}

/// The integration state carried between steps, with the controller's memory.
struct Stepper<const D: usize> {
    t: f64,
    x: Tensor<D>,
    /// f(t, x), reused as the first stage (FSAL).
    k1: Tensor<D>,
    /// Proposed step size (magnitude).
    h: f64,
    err_prev: f64,
    last_rejected: bool,
    /// +1 forwards in time, -1 backwards.
    dir: f64,
}

impl<const D: usize> Stepper<D> {
    fn accept(&mut self, trial: Trial<D>, h: f64, clipped: bool, target: f64) {
        self.t = if clipped {
            target
        } else {
            self.t + self.dir * h
        };
        self.x = trial.x;
        self.k1 = trial.k7;
        let err = trial.err.max(1e-10);
        let mut factor = SAFETY * err.powf(-ALPHA) * self.err_prev.powf(BETA);
        factor = factor.clamp(MIN_FACTOR, MAX_FACTOR);
        if self.last_rejected {
            factor = factor.min(1.0);
        }
        self.err_prev = trial.err.max(ERR_PREV_FLOOR);
        self.last_rejected = false;
        // A step shortened to hit an output time says nothing against the longer proposal.
        self.h = if clipped && factor >= 1.0 {
            self.h.max(h * factor)
        } else {
            h * factor
        };
    }

    fn reject(&mut self, err: f64, h: f64) -> Result<()> {
        let factor = if err.is_finite() {
            (SAFETY * err.powf(-0.2)).max(MIN_FACTOR)
        } else {
            MIN_FACTOR
        };
        self.h = h * factor;
        self.last_rejected = true;
        if self.h > 16.0 * f64::EPSILON * self.t.abs().max(1.0) {
            return Ok(());
        }
        if err.is_finite() {
            Err(Error::invalid(
                "Dopri5 step size",
                format!(
                    "underflow at t={}: the problem may be stiff or singular there",
                    self.t
                ),
            ))
        } else {
            Err(Error::NonFinite {
                what: format!("Dopri5 trial states near t={} (even tiny steps)", self.t),
            })
        }
    }
}

/// `x + h·Σ cᵢ kᵢ`, skipping zero weights. Derived from `x`, so it keeps x's dtype and device.
fn combine<const D: usize>(x: &Tensor<D>, h: f64, terms: &[(f64, &Tensor<D>)]) -> Tensor<D> {
    terms
        .iter()
        .filter(|(c, _)| *c != 0.0)
        .fold(x.clone(), |acc, (c, k)| acc + (*k).clone() * (h * c))
}

fn weighted<'a, const D: usize>(
    weights: &[f64],
    ks: &[&'a Tensor<D>],
) -> Vec<(f64, &'a Tensor<D>)> {
    weights.iter().copied().zip(ks.iter().copied()).collect()
}

/// Evaluates `f` and checks the result is finite and shaped like `x`: a field that fails here
/// would otherwise surface as a confusing broadcast error or a silent NaN trajectory.
fn eval_checked<const D: usize>(
    f: &mut impl VectorField<D>,
    t: f64,
    x: &Tensor<D>,
) -> Result<Tensor<D>> {
    let k = f.eval(t, x);
    if k.dims() != x.dims() {
        return Err(Error::Shape {
            what: format!("vector field at t={t}"),
            expected: format!("{:?}", x.dims()),
            found: format!("{:?}", k.dims()),
        });
    }
    check_finite(&k, &format!("vector field at t={t}"))?;
    Ok(k)
}

fn rms<const D: usize>(x: &Tensor<D>) -> Result<f64> {
    let v = read_f64(x.clone().square().mean(), "Dopri5 initial step")?;
    Ok(v[0].sqrt())
}

/// Checks all entries are finite (through their sum, a single read-back: any NaN or infinity
/// makes the sum non-finite).
fn check_finite<const D: usize>(x: &Tensor<D>, what: &str) -> Result<()> {
    let sum = read_f64(x.clone().sum(), what)?;
    if sum[0].is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite { what: what.into() })
    }
}

fn read_f64(x: Tensor<1>, what: &str) -> Result<Vec<f64>> {
    x.try_into_vec_as::<f64>()
        .map_err(|e| Error::invalid(what, format!("cannot read tensor: {e}")))
}

fn check_times(times: &[f64]) -> Result<()> {
    if times.len() < 2 {
        return Err(Error::invalid(
            "ODE times",
            format!(
                "need the initial time and at least one more, got {}",
                times.len()
            ),
        ));
    }
    if let Some(t) = times.iter().find(|t| !t.is_finite()) {
        return Err(Error::invalid("ODE times", format!("{t} is not finite")));
    }
    let dir = (times[1] - times[0]).signum();
    let monotone = times
        .windows(2)
        .all(|w| (w[1] - w[0]).signum() == dir && w[1] != w[0]);
    if !monotone {
        return Err(Error::invalid(
            "ODE times",
            format!("must be strictly increasing or strictly decreasing, got {times:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::loglog_slope;
    use burn::tensor::{DType, Device, TensorData};

    fn tensor(values: Vec<f64>, shape: [usize; 2], dtype: DType) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), (&Device::flex(), dtype))
    }

    fn values(x: &Tensor<2>) -> Vec<f64> {
        x.clone().try_into_vec_as::<f64>().unwrap()
    }

    fn max_abs_diff(x: &Tensor<2>, exact: &[f64]) -> f64 {
        values(x)
            .iter()
            .zip(exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }

    /// dx/dt = A x with A = [[-1, 2], [-2, -1]] = -I + 2J: a decaying rotation, with
    /// x(t) = e^{-t} [cos 2t·x1 + sin 2t·x2, −sin 2t·x1 + cos 2t·x2]. Rows of x are states.
    struct Linear {
        a_t: Tensor<2>,
    }

    impl Linear {
        fn new() -> Self {
            Linear {
                a_t: tensor(vec![-1.0, -2.0, 2.0, -1.0], [2, 2], DType::F64),
            }
        }

        fn field(&self) -> impl FnMut(f64, &Tensor<2>) -> Tensor<2> + '_ {
            |_t, x: &Tensor<2>| x.clone().matmul(self.a_t.clone())
        }

        fn x0() -> (Tensor<2>, Vec<f64>) {
            let v = vec![1.0, 0.5, -0.3, 2.0];
            (tensor(v.clone(), [2, 2], DType::F64), v)
        }

        fn exact(x0: &[f64], t: f64) -> Vec<f64> {
            let (c, s, e) = ((2.0 * t).cos(), (2.0 * t).sin(), (-t).exp());
            x0.chunks(2)
                .flat_map(|r| [e * (c * r[0] + s * r[1]), e * (-s * r[0] + c * r[1])])
                .collect()
        }
    }

    #[test]
    fn rk4_linear_matches_exact() {
        let lin = Linear::new();
        let (x0, v0) = Linear::x0();
        let sol = Rk4 { steps: 200 }
            .solve(&mut lin.field(), x0, 0.0, 1.0)
            .unwrap();
        assert_eq!(sol.times, vec![0.0, 1.0]);
        assert_eq!((sol.nfe, sol.accepted, sol.rejected), (800, 200, 0));
        assert_eq!(sol.states.last().unwrap().dtype(), DType::F64);
        let err = max_abs_diff(sol.states.last().unwrap(), &Linear::exact(&v0, 1.0));
        assert!(err < 1e-9, "error {err}");
    }

    #[test]
    fn rk4_observed_order_is_four() {
        let lin = Linear::new();
        let (x0, v0) = Linear::x0();
        let exact = Linear::exact(&v0, 1.0);
        let steps = [4usize, 8, 16, 32, 64];
        let errors: Vec<f64> = steps
            .iter()
            .map(|&n| {
                let sol = solve_rk4(&mut lin.field(), x0.clone(), 0.0, 1.0, n).unwrap();
                max_abs_diff(sol.states.last().unwrap(), &exact)
            })
            .collect();
        let ns: Vec<f64> = steps.iter().map(|&n| n as f64).collect();
        let slope = loglog_slope(&ns, &errors).unwrap();
        println!("RK4 errors {errors:?}, observed order slope {slope:.3}");
        assert!((slope + 4.0).abs() <= 0.3, "slope {slope}");
    }

    #[test]
    fn rk4_grid_states_at_each_time() {
        let lambda = -0.7;
        let mut f = |_t: f64, x: &Tensor<2>| x.clone() * lambda;
        let x0 = tensor(vec![1.0, 2.0], [1, 2], DType::F64);
        let times = [0.0, 0.25, 0.5, 1.0];
        let states = solve_rk4_grid(&mut f, x0, &times, 20).unwrap();
        assert_eq!(states.len(), times.len());
        for (x, t) in states.iter().zip(times) {
            let e = (lambda * t).exp();
            assert!(max_abs_diff(x, &[e, 2.0 * e]) < 1e-9, "t={t}");
        }
    }

    #[test]
    fn dopri5_error_tracks_tolerance() {
        let lin = Linear::new();
        let (x0, v0) = Linear::x0();
        let times = [0.0, 2.0];
        let exact = Linear::exact(&v0, 2.0);
        let mut nfes = Vec::new();
        for rtol in [1e-4, 1e-6, 1e-8] {
            let cfg = Dopri5Config {
                rtol,
                atol: rtol * 1e-3,
                ..Default::default()
            };
            let sol = solve_dopri5(&mut lin.field(), x0.clone(), &times, &cfg).unwrap();
            let err = max_abs_diff(sol.states.last().unwrap(), &exact);
            println!(
                "Dopri5 rtol={rtol:e}: max error {err:.3e}, nfe {}, accepted {}, rejected {}",
                sol.nfe, sol.accepted, sol.rejected
            );
            assert!(err <= 10.0 * rtol, "rtol {rtol}: error {err}");
            assert_eq!(sol.times, times.to_vec());
            nfes.push(sol.nfe);
        }
        assert!(nfes.windows(2).all(|w| w[0] < w[1]), "nfe {nfes:?}");
    }

    #[test]
    fn dopri5_time_dependent_field_hits_output_times() {
        // dx/dt = cos(t)·x, x(t) = x0·exp(sin t).
        let mut f = |t: f64, x: &Tensor<2>| x.clone() * t.cos();
        let x0 = tensor(vec![1.0, -0.5, 3.0], [1, 3], DType::F64);
        let times: Vec<f64> = (0..=10).map(|i| 0.5 * i as f64).collect();
        let sol = solve_dopri5(&mut f, x0, &times, &Dopri5Config::default()).unwrap();
        assert_eq!(sol.states.len(), times.len());
        for (x, &t) in sol.states.iter().zip(&times) {
            let e = t.sin().exp();
            let err = max_abs_diff(x, &[e, -0.5 * e, 3.0 * e]);
            assert!(err < 1e-5, "t={t}: error {err}");
        }
    }

    #[test]
    fn dopri5_runs_backwards_in_time() {
        let mut f = |t: f64, x: &Tensor<2>| x.clone() * t.cos();
        let x1 = tensor(vec![1f64.sin().exp()], [1, 1], DType::F64);
        let sol = solve_dopri5(&mut f, x1, &[1.0, 0.0], &Dopri5Config::default()).unwrap();
        assert!(max_abs_diff(sol.states.last().unwrap(), &[1.0]) < 1e-6);
    }

    #[test]
    fn f32_state_stays_f32() {
        let mut f = |t: f64, x: &Tensor<2>| x.clone() * t.cos();
        let x0 = tensor(vec![1.0, 2.0], [1, 2], DType::F32);
        let cfg = Dopri5Config {
            rtol: 1e-6,
            atol: 1e-7,
            ..Default::default()
        };
        let sol = solve_dopri5(&mut f, x0.clone(), &[0.0, 1.0], &cfg).unwrap();
        let e = 1f64.sin().exp();
        assert_eq!(sol.states.last().unwrap().dtype(), DType::F32);
        let err = max_abs_diff(sol.states.last().unwrap(), &[e, 2.0 * e]);
        println!("Dopri5 f32 error {err:.3e}");
        assert!(err < 1e-5, "f32 Dopri5 error {err}");
        let rk = solve_rk4(&mut f, x0, 0.0, 1.0, 50).unwrap();
        assert_eq!(rk.states.last().unwrap().dtype(), DType::F32);
        assert!(max_abs_diff(rk.states.last().unwrap(), &[e, 2.0 * e]) < 1e-5);
    }

    #[test]
    fn max_steps_is_enforced() {
        let mut f = |t: f64, x: &Tensor<2>| x.clone() * (10.0 * t).cos();
        let x0 = tensor(vec![1.0], [1, 1], DType::F64);
        let cfg = Dopri5Config {
            rtol: 1e-10,
            atol: 1e-12,
            max_steps: 5,
            h0: None,
        };
        let err = solve_dopri5(&mut f, x0, &[0.0, 10.0], &cfg).unwrap_err();
        assert!(err.to_string().contains("max_steps"), "{err}");
    }

    #[test]
    fn non_finite_states_are_errors() {
        let mut nan = |_t: f64, x: &Tensor<2>| x.clone() * f64::NAN;
        let x0 = tensor(vec![1.0], [1, 1], DType::F64);
        let rk = solve_rk4(&mut nan, x0.clone(), 0.0, 1.0, 4).unwrap_err();
        assert!(matches!(rk, Error::NonFinite { .. }), "{rk}");
        let dp = solve_dopri5(&mut nan, x0.clone(), &[0.0, 1.0], &Dopri5Config::default());
        assert!(matches!(dp, Err(Error::NonFinite { .. })));
        // dx/dt = x² blows up at t = 1: the solver must stop with an error, not return junk.
        let mut blowup = |_t: f64, x: &Tensor<2>| x.clone().square();
        assert!(solve_dopri5(&mut blowup, x0, &[0.0, 2.0], &Dopri5Config::default()).is_err());
    }

    #[test]
    fn bad_settings_are_rejected() {
        let mut f = |_t: f64, x: &Tensor<2>| x.clone();
        let x0 = tensor(vec![1.0], [1, 1], DType::F64);
        let bad = Dopri5Config {
            rtol: -1.0,
            ..Default::default()
        };
        assert!(solve_dopri5(&mut f, x0.clone(), &[0.0, 1.0], &bad).is_err());
        let ok = Dopri5Config::default();
        assert!(solve_dopri5(&mut f, x0.clone(), &[0.0, 1.0, 0.5], &ok).is_err());
        assert!(solve_dopri5(&mut f, x0.clone(), &[0.0], &ok).is_err());
        assert!(solve_rk4(&mut f, x0.clone(), 0.0, 1.0, 0).is_err());
        let mut wrong_shape = |_t: f64, x: &Tensor<2>| x.clone().repeat(&[1, 2]);
        let err = solve_rk4(&mut wrong_shape, x0, 0.0, 1.0, 1).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
    }
}

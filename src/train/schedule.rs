//! Learning-rate schedules over epochs, with an optional linear warm-up over steps.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::str::FromStr;

/// How the learning rate evolves over the epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// ÷10 after epoch E/3 and again after 2E/3 (the paper's TinyResNet runs: 90 epochs, drops
    /// after epochs 30 and 60, paper.md §3.4).
    Step,
    /// `lr·(1 + cos(π e/E))/2`, stepped once per epoch (the paper's CIFAR runs, paper.md §3.2).
    Cosine,
}

impl FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "step" => Ok(Schedule::Step),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(Error::invalid(
                "--schedule",
                format!("`{s}`: expected step, cosine or constant"),
            )),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Constant => "constant",
            Schedule::Step => "step",
            Schedule::Cosine => "cosine",
        })
    }
}

/// Where a step sits in the run.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 0-based epoch.
    pub epoch: usize,
    pub epochs: usize,
    /// 0-based step within the epoch.
    pub step: usize,
    pub steps_per_epoch: usize,
}

impl Schedule {
    /// The rate at `at` for base rate `base`; `warmup_epochs` > 0 ramps it linearly from
    /// base/steps to base over that many epochs' steps (a warm-up multiplies the schedule).
    pub fn lr(self, base: f64, warmup_epochs: f64, at: Progress) -> f64 {
        let e = at.epoch as f64;
        let epochs = at.epochs.max(1) as f64;
        let factor = match self {
            Schedule::Constant => 1.0,
            Schedule::Step => {
                let drops = [epochs / 3.0, 2.0 * epochs / 3.0]
                    .iter()
                    .filter(|&&m| e > m.floor())
                    .count();
                0.1f64.powi(drops as i32)
            }
            Schedule::Cosine => 0.5 * (1.0 + (PI * e / epochs).cos()),
        };
        let global = (at.epoch * at.steps_per_epoch + at.step + 1) as f64;
        let warm = warmup_epochs * at.steps_per_epoch as f64;
        let ramp = if warm > 0.0 {
            (global / warm).min(1.0)
        } else {
            1.0
        };
        base * factor * ramp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: usize, epochs: usize) -> Progress {
        Progress {
            epoch,
            epochs,
            step: 0,
            steps_per_epoch: 10,
        }
    }

    #[test]
    fn step_drops_after_a_third_and_two_thirds() {
        let lrs: Vec<f64> = [0, 30, 31, 60, 61, 89]
            .iter()
            .map(|&e| Schedule::Step.lr(0.1, 0.0, at(e, 90)))
            .collect();
        let want = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001];
        for (l, w) in lrs.iter().zip(want) {
            assert!((l - w).abs() < 1e-12, "{lrs:?}");
        }
    }

    #[test]
    fn cosine_and_warmup() {
        assert!((Schedule::Cosine.lr(0.1, 0.0, at(100, 200)) - 0.05).abs() < 1e-12);
        let first = Schedule::Constant.lr(1.0, 2.0, at(0, 5));
        assert!((first - 0.05).abs() < 1e-12, "{first}");
        assert_eq!(Schedule::Constant.lr(1.0, 2.0, at(2, 5)), 1.0);
        assert!("linear".parse::<Schedule>().is_err());
    }
}

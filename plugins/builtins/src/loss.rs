//! `loss`: netem's loss models (random, Gilbert-Elliott, 4-state Markov), with ECN
//! marking.

use crate::Builtin;
use alloc::format;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use synthnet_sdk::config::ratio;

#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    #[default]
    Random,
    GilbertElliott,
    FourState,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: Model,
    /// random: probability that a packet is lost, 0..=1.
    pub loss_ratio: f64,
    /// random: netem's correlation approximation, 0..=1.
    pub correlation_ratio: f64,
    /// gilbert_elliott: P(good → bad) per packet (netem's p).
    pub p_ratio: Option<f64>,
    /// gilbert_elliott: P(bad → good) per packet (netem's r; default 1 − p).
    pub r_ratio: Option<f64>,
    /// gilbert_elliott: loss probability in the bad state (netem's 1-h; default 1).
    pub bad_loss_ratio: Option<f64>,
    /// gilbert_elliott: loss probability in the good state (netem's 1-k; default 0).
    pub good_loss_ratio: Option<f64>,
    /// four_state: the transition probabilities of netem's `loss state`.
    pub p13_ratio: Option<f64>,
    pub p31_ratio: Option<f64>,
    pub p32_ratio: Option<f64>,
    pub p23_ratio: Option<f64>,
    pub p14_ratio: Option<f64>,
    /// Mark ECN-capable packets CE instead of dropping them (netem's `ecn`).
    pub ecn: bool,
}

/// A loss model with every probability resolved (defaults filled in) and checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved {
    Random {
        p: f64,
        rho: f64,
    },
    GilbertElliott {
        p: f64,
        r: f64,
        bad_loss: f64,
        good_loss: f64,
    },
    FourState {
        p13: f64,
        p31: f64,
        p32: f64,
        p23: f64,
        p14: f64,
    },
}

impl Config {
    /// The model asked for, with its defaults, or why it is not valid.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let model_fields: [(&str, Model, bool); 11] = [
            ("loss_ratio", Model::Random, self.loss_ratio != 0.0),
            (
                "correlation_ratio",
                Model::Random,
                self.correlation_ratio != 0.0,
            ),
            ("p_ratio", Model::GilbertElliott, self.p_ratio.is_some()),
            ("r_ratio", Model::GilbertElliott, self.r_ratio.is_some()),
            (
                "bad_loss_ratio",
                Model::GilbertElliott,
                self.bad_loss_ratio.is_some(),
            ),
            (
                "good_loss_ratio",
                Model::GilbertElliott,
                self.good_loss_ratio.is_some(),
            ),
            ("p13_ratio", Model::FourState, self.p13_ratio.is_some()),
            ("p31_ratio", Model::FourState, self.p31_ratio.is_some()),
            ("p32_ratio", Model::FourState, self.p32_ratio.is_some()),
            ("p23_ratio", Model::FourState, self.p23_ratio.is_some()),
            ("p14_ratio", Model::FourState, self.p14_ratio.is_some()),
        ];
        for (field, model, given) in model_fields {
            if given && model != self.model {
                return Err(format!(
                    "{field}: belongs to model {model:?}, not to {:?}",
                    self.model
                ));
            }
        }
        Ok(match self.model {
            Model::Random => Resolved::Random {
                p: ratio("loss_ratio", self.loss_ratio)?,
                rho: ratio("correlation_ratio", self.correlation_ratio)?,
            },
            Model::GilbertElliott => {
                let p = ratio(
                    "p_ratio",
                    self.p_ratio
                        .ok_or("p_ratio: the gilbert_elliott model needs it")?,
                )?;
                Resolved::GilbertElliott {
                    p,
                    r: ratio("r_ratio", self.r_ratio.unwrap_or(1.0 - p))?,
                    bad_loss: ratio("bad_loss_ratio", self.bad_loss_ratio.unwrap_or(1.0))?,
                    good_loss: ratio("good_loss_ratio", self.good_loss_ratio.unwrap_or(0.0))?,
                }
            }
            Model::FourState => {
                let p13 = ratio(
                    "p13_ratio",
                    self.p13_ratio
                        .ok_or("p13_ratio: the four_state model needs it")?,
                )?;
                let p31 = ratio("p31_ratio", self.p31_ratio.unwrap_or(1.0 - p13))?;
                let p32 = ratio("p32_ratio", self.p32_ratio.unwrap_or(0.0))?;
                let p23 = ratio("p23_ratio", self.p23_ratio.unwrap_or(1.0))?;
                let p14 = ratio("p14_ratio", self.p14_ratio.unwrap_or(0.0))?;
                if p13 + p14 > 1.0 {
                    return Err(format!(
                        "p14_ratio: p13 + p14 must be at most 1, got {}",
                        p13 + p14
                    ));
                }
                if p31 + p32 > 1.0 {
                    return Err(format!(
                        "p32_ratio: p31 + p32 must be at most 1, got {}",
                        p31 + p32
                    ));
                }
                Resolved::FourState {
                    p13,
                    p31,
                    p32,
                    p23,
                    p14,
                }
            }
        })
    }
}

impl Builtin for Config {
    const PLUGIN: &'static str = "loss";
    fn validate(&self) -> Result<(), String> {
        self.resolve().map(drop)
    }
}

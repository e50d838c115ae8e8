//! `[alerts]`: the thresholds of the auditor's alerts, each optional, each checked for a value
//! that would make an alert meaningless (a multiplier of 0 raises one for every hour).

use super::dur;
use crate::config::raw::RawAlerts;
use crate::config::{AlertSettings, KeyError};
use std::time::Duration;

pub(super) fn alerts(raw: RawAlerts) -> Result<AlertSettings, KeyError> {
    let d = AlertSettings::default();
    let hour = Duration::from_secs(3600);
    let at_least_an_hour = |key: &str, v: &Option<String>, default: Duration| {
        let got = dur(&format!("alerts.{key}"), v, default)?;
        if got < hour {
            return Err(KeyError::new(format!("alerts.{key}"), "must be at least 1h"));
        }
        Ok(got)
    };
    let at_least_one = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(KeyError::new(format!("alerts.{key}"), "must be at least 1")),
        v => Ok(v.unwrap_or(default)),
    };
    let bulk_multiplier = raw.bulk_multiplier.unwrap_or(d.bulk_multiplier);
    if !(bulk_multiplier >= 1.0 && bulk_multiplier.is_finite()) {
        return Err(KeyError::new(
            "alerts.bulk_multiplier",
            "must be a number of at least 1 (how many times the usual hourly peak)",
        ));
    }
    Ok(AlertSettings {
        bulk_multiplier,
        bulk_floor: at_least_one("bulk_floor", raw.bulk_floor, d.bulk_floor)?,
        history: at_least_an_hour("history", &raw.history, d.history)?,
        lookback: at_least_an_hour("lookback", &raw.lookback, d.lookback)?,
        refusal_spike: at_least_one("refusal_spike", raw.refusal_spike, d.refusal_spike)?,
        tls_rejection_spike: at_least_one("tls_rejection_spike", raw.tls_rejection_spike, d.tls_rejection_spike)?,
        checkpoint_grace: dur("alerts.checkpoint_grace", &raw.checkpoint_grace, d.checkpoint_grace)?,
    })
}

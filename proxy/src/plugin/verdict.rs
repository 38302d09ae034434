//! What a hook call of a plugin instance can come back with: the decisions
//! of `on_request` and `on_response`, and the ways a call fails.

use std::time::Duration;

use weir_abi::rejection::Rejection;

use super::views::LocalAnswer;

/// A plugin call failed. The chain applies the route's trap policy.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin trapped (panic, out of memory, deadline); the instance was discarded.
    #[error("plugin {plugin} trapped in {hook}: {message}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The hook.
        hook: &'static str,
        /// The trap.
        message: String,
    },
    /// `configure` (or `restore`) refused.
    #[error("plugin {plugin} rejected its {what}: {rejection}")]
    Rejected {
        /// The plugin's name.
        plugin: String,
        /// "config" or "snapshot".
        what: &'static str,
        /// The plugin's message, and the setting it names (if it names one).
        rejection: Rejection,
    },
    /// Trapped repeatedly; not rebuilt until the back-off ends.
    #[error("plugin {plugin} is backing off after {traps} consecutive traps")]
    BackingOff {
        /// The plugin's name.
        plugin: String,
        /// Consecutive traps so far.
        traps: u32,
    },
    /// A hook returned a value outside the ABI.
    #[error("plugin {plugin} returned invalid value {value} from {hook}")]
    BadReturn {
        /// The plugin's name.
        plugin: String,
        /// The hook.
        hook: &'static str,
        /// What it returned.
        value: i64,
    },
}

/// What `on_request` decided.
#[derive(Debug)]
pub enum RequestVerdict {
    /// Go on inwards, with the attempt timeout the plugin set, if any.
    Continue {
        /// The plugin's attempt timeout.
        timeout: Option<Duration>,
    },
    /// Answer locally.
    Answer(LocalAnswer),
}

/// What `on_response` decided.
#[derive(Debug)]
pub enum ResponseVerdict {
    /// Pass the outcome on.
    Pass,
    /// Replace it with this answer.
    Replace(LocalAnswer),
    /// Run the inner layers again after this delay.
    Retry(Duration),
}

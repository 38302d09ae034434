//! Bench plugin: an `on_request` that does nothing — the floor of a hook call.

use weir_sdk::{Plugin, Request, RequestAction};

#[derive(Default)]
struct Noop;

impl Plugin for Noop {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction {
        RequestAction::Continue
    }
}

weir_sdk::export!(Noop, hooks: [on_request]);

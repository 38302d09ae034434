//! Bench plugin: an `on_request` that does nothing — the floor of a hook call.

use weir_sdk::{Plugin, Request, RequestAction};

#[derive(Default)]
struct Noop;

#[weir_sdk::plugin]
impl Plugin for Noop {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction {
        RequestAction::Continue
    }
}

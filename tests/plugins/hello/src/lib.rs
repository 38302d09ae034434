//! Adds `x-hello: world` to every response: the SDK's hello world.
use weir_sdk::{Plugin, Request, Response, ResponseAction};

#[derive(Default)]
struct Hello;

#[weir_sdk::plugin]
impl Plugin for Hello {
    type Config = ();
    type Ctx = ();
    fn on_response(&mut self, _: &mut (), _: &Request, resp: &mut Response) -> ResponseAction {
        let _ = resp.set_header("x-hello", "world");
        ResponseAction::Pass
    }
}

//! An API-key check declared `fail_closed`: answers 401 without `x-key`,
//! panics (traps) on `x-key: boom`, lets anything else through. Its failures
//! must answer 503 even on a fail-open route.
use weir_sdk::{Answer, Plugin, Request, RequestAction};

#[derive(Default)]
struct Guard;

#[weir_sdk::plugin(fail_closed)]
impl Plugin for Guard {
    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        match req.header("x-key") {
            Ok(Some(key)) if key == "boom" => panic!("the key check blew up"),
            Ok(Some(_)) => RequestAction::Continue,
            _ => RequestAction::Answer(Answer::new(401)),
        }
    }
}
